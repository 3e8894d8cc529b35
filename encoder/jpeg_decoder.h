// JPEG -> 8-bit BGR with EXIF orientation applied, pixel for pixel what cv::imdecode(IMREAD_COLOR)
// gives, except that a photo whose data is cut short or corrupt is refused instead of being filled
// with grey, and libjpeg's warnings never reach stderr unnamed (issue 27 B).
//
// Same library as OpenCV's own JPEG path (libjpeg-turbo, JDCT_ISLOW, fancy upsampling): greyscale
// and YCbCr decode straight to BGR; CMYK/YCCK are converted as OpenCV does; EXIF orientation
// (libexif) is applied with the same flips and transposes.
#pragma once

#include <filesystem>
#include <opencv2/core/mat.hpp>
#include <string_view>

namespace captioner {

// Throws ImageError(file, "damaged JPEG: <libjpeg's words>") when any pixel could not be decoded
// (premature end of data, bad Huffman code...), or "cannot decode jpeg: ..." on a fatal error.
// Harmless warnings (extraneous bytes before a marker, an unknown JFIF revision) are dropped.
// `at_least` (width, height of the upright photo; empty: full size): decode at the smallest of
// libjpeg's DCT scales 1/8, 1/4 and 1/2 that keeps the photo at least that large. The inverse DCT
// then makes the fewer pixels directly, and colour conversion and the later resize touch a quarter
// of them or less: what a 12 MP photo needs for a 224x224 encoder.
cv::Mat decode_jpeg(std::string_view bytes, const std::filesystem::path& file, cv::Size at_least = {});

}  // namespace captioner
