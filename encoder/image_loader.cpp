#include "encoder/image_loader.h"

#include <cstdio>
#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "encoder/image_probe.h"
#include "encoder/jpeg_decoder.h"
#include "encoder/png_decoder.h"

namespace captioner {

namespace fs = std::filesystem;

ImageLoader::ImageLoader(PreprocessSpec spec, ImageLoaderOptions options) : spec_(std::move(spec)), options_(options) {}

std::string printable_name(const std::string& name) {
  std::string out;
  for (unsigned char c : name) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

bool has_image_extension(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* e : {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm"}) {
    if (ext == e) return true;
  }
  return false;
}

namespace {

cv::Mat over_white(const cv::Mat& bgra) {
  CV_Assert(bgra.type() == CV_8UC4);
  cv::Mat out(bgra.rows, bgra.cols, CV_8UC3);
  for (int y = 0; y < bgra.rows; ++y) {
    const uchar* in = bgra.ptr<uchar>(y);
    uchar* o = out.ptr<uchar>(y);
    for (int x = 0; x < bgra.cols; ++x, in += 4, o += 3) {
      const int a = in[3];
      for (int c = 0; c < 3; ++c) o[c] = static_cast<uchar>((in[c] * a + 255 * (255 - a) + 127) / 255);
    }
  }
  return out;
}

// Photos are shrunk to at most this many pixels on their longer side straight after decoding, in
// their own depth and channels: the encoder needs 224 and the report 320, while a 9000x9000 16-bit
// RGBA PNG would otherwise be converted and composited at 648 MB a copy.
constexpr int kMaxWorkingSide = 4096;

cv::Mat shrink_to_working_size(const cv::Mat& m) {
  const int side = std::max(m.cols, m.rows);
  if (side <= kMaxWorkingSide) return m;
  const double scale = static_cast<double>(kMaxWorkingSide) / side;
  cv::Mat out;
  cv::resize(m, out,
             cv::Size(std::max(1, static_cast<int>(std::lround(m.cols * scale))),
                      std::max(1, static_cast<int>(std::lround(m.rows * scale)))),
             0, 0, cv::INTER_AREA);
  return out;
}

cv::Mat to_8bit(const cv::Mat& m) {
  if (m.depth() == CV_8U) return m;
  cv::Mat out;
  switch (m.depth()) {
    case CV_16U:
      m.convertTo(out, CV_8U, 255.0 / 65535.0);
      break;
    case CV_16S:
      m.convertTo(out, CV_8U, 255.0 / 32767.0);
      break;
    case CV_32F:
    case CV_64F:
      m.convertTo(out, CV_8U, 255.0);
      break;  // floats are 0..1
    default:
      m.convertTo(out, CV_8U);
      break;
  }
  return out;
}

}  // namespace

cv::Mat ImageLoader::decode_bytes(std::string_view bytes, const fs::path& file) const {
  if (bytes.empty()) throw ImageError(file, "empty file (0 bytes)");
  ImageHeader h = probe_image(bytes);
  if (h.format.empty()) {
    std::string hint;
    if (bytes.compare(0, 5, "%PDF-") == 0) hint = " (it is a PDF)";
    throw ImageError(file, "not an image: unrecognised format" + hint);
  }
  if (h.format == "gif") throw ImageError(file, "GIF images are not supported (convert to PNG or JPEG)");
  // VP8X's flags byte (offset 20) marks animation (0x02): OpenCV decodes none of its frames.
  if (h.format == "webp" && bytes.size() > 20 && bytes.compare(12, 4, "VP8X") == 0 && (bytes[20] & 0x02) != 0) {
    throw ImageError(file, "animated WebP is not supported (convert a frame to PNG or JPEG)");
  }
  if (h.width <= 0 || h.height <= 0) throw ImageError(file, "corrupt " + h.format + " header (no image size)");
  // Each side first: a forged header (4294967295 x 4294967295) must not overflow the product.
  if (h.width > options_.max_pixels || h.height > options_.max_pixels || h.width * h.height > options_.max_pixels) {
    throw ImageError(file, std::to_string(h.width) + "x" + std::to_string(h.height) + " " + h.format + " exceeds the limit of " +
                               std::to_string(options_.max_pixels) + " pixels (raise --max-pixels to allow it)");
  }
  if (!looks_complete(h, bytes)) throw ImageError(file, "truncated " + h.format + " (the file is cut short)");

  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
  cv::Mat img;
  try {
    if (h.format == "jpeg") {
      // Ours rather than cv::imdecode's: the same pixels, but a damaged photo is refused.
      img = shrink_to_working_size(decode_jpeg(bytes, file, reduced_jpeg_floor()));
    } else if (h.format == "bmp") {
      img = shrink_to_working_size(cv::imdecode(raw, cv::IMREAD_COLOR));
    } else {
      // Keep alpha and 16-bit samples to composite and scale them properly.
      if (h.format == "png") {
        img = decode_png(bytes, file);  // ours: libpng's messages never reach stderr unnamed
      } else {
        img = cv::imdecode(raw, cv::IMREAD_UNCHANGED);
      }
      if (!img.empty()) {
        img = to_8bit(shrink_to_working_size(img));
        if (img.channels() == 4) {
          img = over_white(img);
        } else if (img.channels() == 1) {
          cv::cvtColor(img, img, cv::COLOR_GRAY2BGR);
        } else if (img.channels() == 2) {  // gray + alpha
          std::vector<cv::Mat> ch;
          cv::split(img, ch);
          cv::Mat bgra;
          cv::merge(std::vector<cv::Mat>{ch[0], ch[0], ch[0], ch[1]}, bgra);
          img = over_white(bgra);
        } else if (img.channels() != 3) {
          throw ImageError(file, "unsupported " + std::to_string(img.channels()) + "-channel " + h.format);
        }
      }
    }
  } catch (const cv::Exception& e) {
    throw ImageError(file, "cannot decode " + h.format + ": " + e.err);
  }
  if (img.empty()) throw ImageError(file, "cannot decode " + h.format + " (corrupt or truncated data)");
  cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  return img;
}

cv::Mat ImageLoader::decode(const fs::path& file) const {
  std::error_code ec;
  auto status = fs::status(file, ec);
  if (ec || !fs::exists(status)) throw ImageError(file, "no such file");
  if (fs::is_directory(status)) throw ImageError(file, "is a directory");
  // A FIFO blocks open() until a writer comes and a device (/dev/zero) never ends nor has a
  // size to check against the limit: only regular files are read.
  if (!fs::is_regular_file(status)) throw ImageError(file, "not a regular file (a pipe, socket or device)");
  auto size = fs::file_size(file, ec);
  if (!ec && static_cast<int64_t>(size) > options_.max_file_bytes) {
    throw ImageError(file, "file of " + std::to_string(size >> 20) + " MiB exceeds the limit of " +
                               std::to_string(options_.max_file_bytes >> 20) + " MiB");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ImageError(file, std::string("cannot open: ") + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw ImageError(file, "read error");
  return decode_bytes(bytes, file);
}

cv::Size ImageLoader::reduced_jpeg_floor() const {
  if (!options_.reduced_jpeg_decode) return {};
  if (spec_.resize == PreprocessSpec::Resize::kStretch) {
    return {static_cast<int>(spec_.input_width), static_cast<int>(spec_.input_height)};
  }
  // Cropping keeps the shorter side at resize_size (at least the input size), whichever side it is.
  const int side = static_cast<int>(std::max({spec_.resize_size, spec_.input_width, spec_.input_height}));
  return {side, side};
}

void ImageLoader::resize_to_planes(const cv::Mat& rgb, uint8_t* planes, bool flip) const {
  const int H = static_cast<int>(spec_.input_height), W = static_cast<int>(spec_.input_width);
  cv::Mat sized;
  auto interp = [](int from_w, int from_h, int to_w, int to_h) {
    // Area averaging when shrinking avoids aliasing; bilinear when enlarging.
    return (to_w < from_w || to_h < from_h) ? cv::INTER_AREA : cv::INTER_LINEAR;
  };
  if (spec_.resize == PreprocessSpec::Resize::kStretch) {
    if (rgb.cols == W && rgb.rows == H) {
      sized = rgb;
    } else {
      cv::resize(rgb, sized, cv::Size(W, H), 0, 0, interp(rgb.cols, rgb.rows, W, H));
    }
  } else {
    double scale = static_cast<double>(spec_.resize_size) / std::min(rgb.cols, rgb.rows);
    int rw = std::max(W, static_cast<int>(std::lround(rgb.cols * scale)));
    int rh = std::max(H, static_cast<int>(std::lround(rgb.rows * scale)));
    cv::Mat resized;
    cv::resize(rgb, resized, cv::Size(rw, rh), 0, 0, interp(rgb.cols, rgb.rows, rw, rh));
    sized = resized(cv::Rect((rw - W) / 2, (rh - H) / 2, W, H));
  }
  if (flip) {
    cv::Mat flipped;
    cv::flip(sized, flipped, 1);
    sized = flipped;
  }
  // Interleaved RGB -> channel planes in the network's order.
  const size_t plane = static_cast<size_t>(H) * W;
  for (int y = 0; y < H; ++y) {
    const unsigned char* row = sized.ptr<unsigned char>(y);
    for (int x = 0; x < W; ++x) {
      for (int c = 0; c < 3; ++c) {
        const int dst_c = spec_.bgr ? 2 - c : c;
        planes[dst_c * plane + static_cast<size_t>(y) * W + x] = row[3 * x + c];
      }
    }
  }
}

void ImageLoader::preprocess(const cv::Mat& rgb, float* chw, bool flip) const {
  std::vector<uint8_t> planes(static_cast<size_t>(values_per_image()));
  resize_to_planes(rgb, planes.data(), flip);
  spec_.normalise(planes.data(), chw, 1);
}

void ImageLoader::load_into(const fs::path& file, float* chw, bool flip) const { preprocess(decode(file), chw, flip); }

}  // namespace captioner
