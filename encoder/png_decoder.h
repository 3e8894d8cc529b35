// PNG -> 8- or 16-bit BGR(A) or grey, pixel for pixel what cv::imdecode(IMREAD_UNCHANGED) gives,
// except that libpng's messages never reach stderr: its warnings (odd metadata such as "iCCP:
// known incorrect sRGB profile", once per photo of a folder) are dropped and its errors become one
// ImageError naming the file (issue 27).
//
// Same library and the same transformations as OpenCV's PNG path: palettes and low-bit greys
// expanded to 8 bits, tRNS as alpha where the photo has four channels, colour as BGR, 16-bit
// samples in native byte order, interlacing undone.
#pragma once

#include <filesystem>
#include <opencv2/core/mat.hpp>
#include <string_view>

namespace captioner {

// Channels as OpenCV chooses them: 1 for grey, 3 for colour or a palette without transparency,
// 4 for any alpha (grey + alpha, RGBA, a palette or RGB with tRNS). Throws ImageError(file,
// "damaged PNG: <libpng's words>") when the data is corrupt or cut short.
cv::Mat decode_png(std::string_view bytes, const std::filesystem::path& file);

}  // namespace captioner
