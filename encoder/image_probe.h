// Identifies an image file from its first bytes and reads its dimensions from the header, without
// decoding: lets callers skip non-images and refuse huge images before spending memory on them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace captioner {

struct ImageHeader {
  std::string format;  // "jpeg", "png", "bmp", "webp", "tiff", "gif", "pnm"; empty if not recognised
  int64_t width = 0;   // 0 when the header does not say (or is cut short)
  int64_t height = 0;
};

// `bytes` may be just the file's beginning (64 KiB is plenty for the formats above).
ImageHeader probe_image(std::string_view bytes);

// False when the data is visibly cut short: a JPEG without its end-of-image marker, a PNG without
// its IEND chunk, a WebP or BMP shorter than its header says. Catches half-downloaded files
// before the decoder does (libpng and libjpeg would print their own warnings).
bool looks_complete(const ImageHeader& header, std::string_view bytes);

}  // namespace captioner
