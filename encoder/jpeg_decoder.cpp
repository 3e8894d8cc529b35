#include "encoder/jpeg_decoder.h"

#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <cstring>
#include <opencv2/core.hpp>

#include <jpeglib.h>
#include <jerror.h>
#include <libexif/exif-data.h>

#include "encoder/image_loader.h"

namespace captioner {

namespace {

// libjpeg reports fatal errors through error_exit (which must not return: we longjmp back to the
// setjmp of the step that called it) and warnings through emit_message(level -1).
struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char fatal[JMSG_LENGTH_MAX] = {};
  char damage[JMSG_LENGTH_MAX] = {};  // the first warning that means lost pixels
};

void on_fatal_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->fatal);
  std::longjmp(err->jump, 1);
}

// Warnings that leave pixels undecoded (libjpeg fills them with grey) make the photo damaged; the
// rest (extraneous bytes, unknown JFIF revision, a bad ICC marker) leave every pixel right.
void on_message(j_common_ptr cinfo, int level) {
  if (level != -1) return;  // trace output
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  switch (cinfo->err->msg_code) {
    case JWRN_HIT_MARKER:
    case JWRN_JPEG_EOF:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
      if (err->damage[0] == '\0') (*cinfo->err->format_message)(cinfo, err->damage);
      break;
    default:
      break;
  }
  cinfo->err->num_warnings++;
}

// Each step that calls into libjpeg has its own setjmp and no C++ object that a longjmp would skip.
bool read_header(jpeg_decompress_struct* cinfo, ErrorManager* err, const unsigned char* data, size_t size) {
  if (setjmp(err->jump)) return false;
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);  // EXIF
  jpeg_read_header(cinfo, TRUE);
  // As OpenCV: four components (CMYK, YCCK) come out as CMYK, everything else straight as BGR.
  cinfo->out_color_space = cinfo->num_components == 4 ? JCS_CMYK : JCS_EXT_BGR;
  jpeg_calc_output_dimensions(cinfo);
  return true;
}

// Output dimensions at scale 1/denom, as libjpeg computes them (rounded up).
int scaled(JDIMENSION side, int denom) { return static_cast<int>((side + denom - 1) / denom); }

bool set_scale(jpeg_decompress_struct* cinfo, ErrorManager* err, int denom) {
  if (setjmp(err->jump)) return false;
  cinfo->scale_num = 1;
  cinfo->scale_denom = static_cast<unsigned int>(denom);
  jpeg_calc_output_dimensions(cinfo);
  return true;
}

bool read_pixels(jpeg_decompress_struct* cinfo, ErrorManager* err, unsigned char* out, size_t stride) {
  if (setjmp(err->jump)) return false;
  jpeg_start_decompress(cinfo);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = out + static_cast<size_t>(cinfo->output_scanline) * stride;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

// OpenCV's CMYK -> BGR (imgcodecs' icvCvt_CMYK2BGR_8u_C4C3R): libjpeg hands Adobe's inverted CMYK.
cv::Mat cmyk_to_bgr(const cv::Mat& cmyk) {
  cv::Mat bgr(cmyk.rows, cmyk.cols, CV_8UC3);
  for (int y = 0; y < cmyk.rows; ++y) {
    const uchar* in = cmyk.ptr<uchar>(y);
    uchar* out = bgr.ptr<uchar>(y);
    for (int x = 0; x < cmyk.cols; ++x, in += 4, out += 3) {
      const int k = in[3];
      out[2] = static_cast<uchar>(k - ((255 - in[0]) * k >> 8));
      out[1] = static_cast<uchar>(k - ((255 - in[1]) * k >> 8));
      out[0] = static_cast<uchar>(k - ((255 - in[2]) * k >> 8));
    }
  }
  return bgr;
}

// The EXIF orientation tag (1-8) of the first EXIF APP1 segment; 1 (upright) when there is none.
int exif_orientation(const jpeg_decompress_struct& cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1 || m->data_length < 6 || std::memcmp(m->data, "Exif\0\0", 6) != 0) continue;
    ExifData* exif = exif_data_new_from_data(m->data, m->data_length);
    if (!exif) return 1;
    int orientation = 1;
    if (ExifEntry* e = exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
        e && e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->size >= 2) {
      orientation = exif_get_short(e->data, exif_data_get_byte_order(exif));
    }
    exif_data_unref(exif);
    return orientation;
  }
  return 1;
}

// The same flips and transposes as OpenCV's ApplyExifOrientation.
void apply_orientation(cv::Mat& img, int orientation) {
  switch (orientation) {
    case 2:
      cv::flip(img, img, 1);
      break;
    case 3:
      cv::flip(img, img, -1);
      break;
    case 4:
      cv::flip(img, img, 0);
      break;
    case 5:
      cv::transpose(img, img);
      break;
    case 6:
      cv::transpose(img, img);
      cv::flip(img, img, 1);
      break;
    case 7:
      cv::transpose(img, img);
      cv::flip(img, img, -1);
      break;
    case 8:
      cv::transpose(img, img);
      cv::flip(img, img, 0);
      break;
    default:
      break;
  }
}

}  // namespace

cv::Mat decode_jpeg(std::string_view bytes, const std::filesystem::path& file, cv::Size at_least) {
  jpeg_decompress_struct cinfo = {};
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_fatal_error;
  err.pub.emit_message = on_message;
  jpeg_create_decompress(&cinfo);
  struct Destroy {
    jpeg_decompress_struct* c;
    ~Destroy() { jpeg_destroy_decompress(c); }
  } destroy{&cinfo};

  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (!read_header(&cinfo, &err, data, bytes.size())) throw ImageError(file, std::string("cannot decode jpeg: ") + err.fatal);
  const int orientation = exif_orientation(cinfo);  // now: finishing the decompression frees the saved markers
  if (!at_least.empty()) {
    const bool transposed = orientation >= 5 && orientation <= 8;  // these swap width and height
    const int need_w = transposed ? at_least.height : at_least.width, need_h = transposed ? at_least.width : at_least.height;
    for (int denom : {8, 4, 2}) {
      const int w = scaled(cinfo.image_width, denom), h = scaled(cinfo.image_height, denom);
      if (w >= need_w && h >= need_h) {
        if (!set_scale(&cinfo, &err, denom)) throw ImageError(file, std::string("cannot decode jpeg: ") + err.fatal);
        break;
      }
    }
  }
  const int channels = cinfo.out_color_space == JCS_CMYK ? 4 : 3;
  cv::Mat img(static_cast<int>(cinfo.output_height), static_cast<int>(cinfo.output_width), CV_8UC(channels));
  if (!read_pixels(&cinfo, &err, img.data, img.step)) throw ImageError(file, std::string("cannot decode jpeg: ") + err.fatal);
  if (err.damage[0] != '\0') {
    throw ImageError(file, std::string("damaged JPEG, part of the photo could not be decoded (") + err.damage + ")");
  }
  if (channels == 4) img = cmyk_to_bgr(img);
  apply_orientation(img, orientation);
  return img;
}

}  // namespace captioner
