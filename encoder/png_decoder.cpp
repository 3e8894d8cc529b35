#include "encoder/png_decoder.h"

#include <png.h>

#include <csetjmp>
#include <cstring>
#include <string>
#include <vector>

#include "encoder/image_loader.h"

namespace captioner {

namespace {

// What libpng's callbacks share: the bytes still to read and the first error's words.
struct PngSource {
  std::string_view bytes;
  size_t at = 0;
  char error[256] = {};
};

void read_bytes(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->bytes.size() - src->at) png_error(png, "the file is cut short");
  std::memcpy(out, src->bytes.data() + src->at, n);
  src->at += n;
}

// libpng's errors must not return: we longjmp back to the setjmp in decode(). Warnings leave every
// pixel right (metadata libpng could not read, extra data after the image): dropped.
void on_error(png_structp png, png_const_charp message) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  if (src->error[0] == '\0') std::strncpy(src->error, message, sizeof src->error - 1);
  png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}

// OpenCV's choice of channels for IMREAD_UNCHANGED (grfmt_png.cpp, readHeader).
int opencv_channels(png_structp png, png_infop info, int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_PALETTE: {
      png_bytep trans = nullptr;
      int num_trans = 0;
      png_color_16p trans_values = nullptr;
      png_get_tRNS(png, info, &trans, &num_trans, &trans_values);
      return num_trans > 0 ? 4 : 3;
    }
    case PNG_COLOR_TYPE_GRAY_ALPHA:
    case PNG_COLOR_TYPE_RGB_ALPHA:
      return 4;
    default:
      return 1;
  }
}

// Each step that calls into libpng has its own setjmp and no C++ object that a longjmp would
// skip. read_header leaves libpng set up to deliver rows of the Mat it creates.
bool read_header(png_structp png, png_infop info, cv::Mat& image) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
  const int channels = opencv_channels(png, info, color_type);
  image.create(static_cast<int>(height), static_cast<int>(width), CV_MAKETYPE(bit_depth == 16 ? CV_16U : CV_8U, channels));
  // The transformations of OpenCV's readData, in its order.
  if (bit_depth == 16) png_set_swap(png);  // x86 is little-endian
  if (channels < 4) {
    png_set_strip_alpha(png);
  } else {
    png_set_tRNS_to_alpha(png);
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if ((color_type & PNG_COLOR_MASK_COLOR) == 0 && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if ((color_type & PNG_COLOR_MASK_COLOR) && channels > 1) {
    png_set_bgr(png);
  } else if (channels > 1) {
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != image.cols * image.elemSize()) png_error(png, "unexpected row size");
  return true;
}

bool read_pixels(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  return true;
}

}  // namespace

cv::Mat decode_png(std::string_view bytes, const std::filesystem::path& file) {
  PngSource src{bytes};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw ImageError(file, "cannot decode png: out of memory");
  }
  png_set_read_fn(png, &src, read_bytes);
  cv::Mat image;
  bool ok = read_header(png, info, image);
  if (ok) {
    std::vector<png_bytep> rows(static_cast<size_t>(image.rows));
    for (int y = 0; y < image.rows; ++y) rows[static_cast<size_t>(y)] = image.ptr(y);
    ok = read_pixels(png, rows.data());
  }
  png_destroy_read_struct(&png, &info, nullptr);
  if (!ok) throw ImageError(file, std::string("damaged PNG: ") + (src.error[0] ? src.error : "unreadable data"));
  return image;
}

}  // namespace captioner
