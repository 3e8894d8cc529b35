// Turns image files into the pixels an encoder expects. Decodes JPEG, PNG, BMP, WebP and TIFF
// (grayscale, alpha, 16-bit, CMYK) into 8-bit RGB with EXIF orientation applied, then resizes (and
// normalises) per the encoder's PreprocessSpec. Bad files raise ImageError naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <opencv2/core/mat.hpp>
#include <opencv2/core/types.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "encoder/preprocess_spec.h"

namespace captioner {

// A file name as it may be printed on one line: control characters (a newline, ESC sequences that
// retitle or clear a terminal) shown escaped, "\n", "\x1b", so a name cannot split an error line
// in two or pose as another line.
std::string printable_name(const std::string& name);

class ImageError : public std::runtime_error {
 public:
  ImageError(const std::filesystem::path& file, const std::string& problem)
      : std::runtime_error(printable_name(file.string()) + ": " + problem), file_(file), problem_(problem) {}
  const std::filesystem::path& file() const { return file_; }
  const std::string& problem() const { return problem_; }

 private:
  std::filesystem::path file_;
  std::string problem_;
};

struct ImageLoaderOptions {
  int64_t max_pixels = 100'000'000;  // refused before decoding: a 20000x20000 image needs 1.2 GB
  int64_t max_file_bytes = 256LL << 20;
  // JPEGs at least twice what preprocessing needs are decoded at 1/2, 1/4 or 1/8 scale in the DCT
  // (decode_jpeg's at_least), never below the spec's input (or resize) size, whatever else the
  // pixels are for: a report's thumbnails then have at least that longer side, not always 320,
  // and the encoder's input never depends on whether there is a report. Off: every JPEG at full
  // size, as cv::imdecode.
  bool reduced_jpeg_decode = true;
};

class ImageLoader {
 public:
  explicit ImageLoader(PreprocessSpec spec, ImageLoaderOptions options = {});

  const PreprocessSpec& spec() const { return spec_; }
  int64_t values_per_image() const { return 3 * spec_.input_height * spec_.input_width; }

  // File -> 8-bit RGB (H, W, 3), upright; a large JPEG possibly reduced (reduced_jpeg_decode).
  // Throws ImageError.
  cv::Mat decode(const std::filesystem::path& file) const;
  // Encoded bytes -> 8-bit RGB; `file` only names the source in errors.
  cv::Mat decode_bytes(std::string_view bytes, const std::filesystem::path& file) const;

  // RGB image -> (3, H, W) 8-bit planes in the network's channel order, sized per the spec and
  // optionally mirrored left-right: what waits for the encoder (spec().normalise makes the floats).
  void resize_to_planes(const cv::Mat& rgb, uint8_t* planes, bool flip = false) const;
  // resize_to_planes + spec().normalise: normalised (3, H, W) float32 written to `chw`.
  void preprocess(const cv::Mat& rgb, float* chw, bool flip = false) const;

  // decode + preprocess.
  void load_into(const std::filesystem::path& file, float* chw, bool flip = false) const;

 private:
  cv::Size reduced_jpeg_floor() const;  // decode_jpeg's at_least, empty when reducing is off

  PreprocessSpec spec_;
  ImageLoaderOptions options_;
};

// True for the file extensions a folder scan treats as images.
bool has_image_extension(const std::filesystem::path& file);

}  // namespace captioner
