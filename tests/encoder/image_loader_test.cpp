#include "encoder/image_loader.h"

#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <zlib.h>

#include "datasets/file_io.h"
#include "encoder/image_probe.h"
#include "encoder/jpeg_decoder.h"
#include "encoder/png_decoder.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::read_file;
using captioner::test::flickr8k_images;
using captioner::test::TempDir;
using captioner::test::write_text;

namespace {
// 40 wide, 20 high: left half red, right half blue (BGR for OpenCV).
cv::Mat red_blue_bgr(int depth = CV_8U) {
  cv::Mat m(20, 40, CV_8UC3, cv::Scalar(0, 0, 255));
  m(cv::Rect(20, 0, 20, 20)).setTo(cv::Scalar(255, 0, 0));
  if (depth == CV_16U) m.convertTo(m, CV_16U, 257.0);
  return m;
}

std::string encode(const cv::Mat& m, const std::string& ext) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf)) << ext;
  return std::string(buf.begin(), buf.end());
}

void expect_rgb(const cv::Mat& rgb, int y, int x, int r, int g, int b, int tol = 12) {
  auto p = rgb.at<cv::Vec3b>(y, x);
  EXPECT_NEAR(p[0], r, tol) << "R at " << x << "," << y;
  EXPECT_NEAR(p[1], g, tol) << "G at " << x << "," << y;
  EXPECT_NEAR(p[2], b, tol) << "B at " << x << "," << y;
}

// Inserts an EXIF APP1 segment with the given orientation right after the JPEG's SOI marker.
std::string with_exif_orientation(const std::string& jpeg, uint16_t orientation) {
  std::string tiff = std::string("II*\0", 4) + std::string("\x08\0\0\0", 4);  // little-endian, IFD at 8
  tiff += std::string("\x01\0", 2);                                           // one entry
  tiff += std::string("\x12\x01\x03\0\x01\0\0\0", 8);                         // 0x0112 SHORT count 1
  tiff += static_cast<char>(orientation & 0xFF);
  tiff += std::string("\0\0\0", 3);
  tiff += std::string("\0\0\0\0", 4);  // no next IFD
  std::string payload = std::string("Exif\0\0", 6) + tiff;
  uint16_t len = static_cast<uint16_t>(payload.size() + 2);
  std::string app1 = "\xFF\xE1";
  app1 += static_cast<char>(len >> 8);
  app1 += static_cast<char>(len & 0xFF);
  return jpeg.substr(0, 2) + app1 + payload + jpeg.substr(2);
}

ImageLoader loader(PreprocessSpec::Resize resize = PreprocessSpec::Resize::kStretch) {
  PreprocessSpec s;
  s.input_height = s.input_width = 8;
  s.resize = resize;
  s.resize_size = 8;
  s.mean = {0, 0, 0};
  s.std = {1, 1, 1};
  ImageLoaderOptions full_size;  // these tests look at decoded pixels: no JPEG decoded reduced
  full_size.reduced_jpeg_decode = false;
  return ImageLoader(s, full_size);
}

template <typename Fn>
void expect_image_error(Fn fn, const std::string& file, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected " << fragment;
  } catch (const ImageError& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    EXPECT_NE(e.problem().find(fragment), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(ImageLoader, DecodesEveryFormatToUprightRgb) {
  TempDir tmp;
  auto L = loader();
  for (const char* ext : {".jpg", ".png", ".bmp", ".webp", ".tiff"}) {
    auto path = tmp / (std::string("img") + ext);
    write_text(path, encode(red_blue_bgr(), ext));
    cv::Mat rgb = L.decode(path);
    ASSERT_EQ(rgb.type(), CV_8UC3) << ext;
    ASSERT_EQ(rgb.cols, 40);
    ASSERT_EQ(rgb.rows, 20);
    expect_rgb(rgb, 10, 5, 255, 0, 0);  // red stays red: BGR was converted
    expect_rgb(rgb, 10, 35, 0, 0, 255);
  }
}

TEST(ImageLoader, HandlesGrayAlphaAnd16Bit) {
  TempDir tmp;
  auto L = loader();
  cv::Mat gray(10, 10, CV_8UC1, cv::Scalar(77));
  write_text(tmp / "gray.png", encode(gray, ".png"));
  expect_rgb(L.decode(tmp / "gray.png"), 5, 5, 77, 77, 77, 0);

  cv::Mat gray16(10, 10, CV_16UC1, cv::Scalar(65535));
  write_text(tmp / "gray16.png", encode(gray16, ".png"));
  expect_rgb(L.decode(tmp / "gray16.png"), 5, 5, 255, 255, 255, 0);

  write_text(tmp / "rgb16.png", encode(red_blue_bgr(CV_16U), ".png"));
  expect_rgb(L.decode(tmp / "rgb16.png"), 10, 5, 255, 0, 0, 1);

  // Transparent pixels become white, opaque ones keep their colour.
  cv::Mat bgra(10, 10, CV_8UC4, cv::Scalar(0, 0, 255, 255));
  bgra(cv::Rect(0, 0, 5, 10)).setTo(cv::Scalar(0, 0, 0, 0));
  write_text(tmp / "alpha.png", encode(bgra, ".png"));
  cv::Mat rgb = L.decode(tmp / "alpha.png");
  expect_rgb(rgb, 5, 2, 255, 255, 255, 1);
  expect_rgb(rgb, 5, 8, 255, 0, 0, 1);
}

TEST(ImageLoader, HandlesCmykJpeg) {
  auto path = std::filesystem::path(CAPTIONER_SOURCE_DIR) / "tests/data/cmyk_red_blue.jpg";
  cv::Mat rgb = loader().decode(path);
  ASSERT_EQ(rgb.cols, 16);
  expect_rgb(rgb, 4, 2, 255, 0, 0, 30);
  expect_rgb(rgb, 4, 13, 0, 0, 255, 30);
}

TEST(ImageLoader, HonoursExifOrientation) {
  TempDir tmp;
  std::string jpeg = encode(red_blue_bgr(), ".jpg");
  write_text(tmp / "rot.jpg", with_exif_orientation(jpeg, 6));  // display rotated 90 degrees clockwise
  cv::Mat rgb = loader().decode(tmp / "rot.jpg");
  ASSERT_EQ(rgb.cols, 20);  // width and height swap
  ASSERT_EQ(rgb.rows, 40);
  expect_rgb(rgb, 5, 10, 255, 0, 0);  // the left (red) half is now on top
  expect_rgb(rgb, 35, 10, 0, 0, 255);
}

TEST(ImageLoader, ReportsBadFilesByName) {
  TempDir tmp;
  auto L = loader();
  write_text(tmp / "empty.jpg", "");
  expect_image_error([&] { L.decode(tmp / "empty.jpg"); }, "empty.jpg", "empty file");
  write_text(tmp / "notes.jpg", "just some text, not a picture\n");
  expect_image_error([&] { L.decode(tmp / "notes.jpg"); }, "notes.jpg", "not an image");
  write_text(tmp / "doc.png", "%PDF-1.4\n%binary\n");
  expect_image_error([&] { L.decode(tmp / "doc.png"); }, "doc.png", "PDF");
  std::string jpeg = encode(red_blue_bgr(), ".jpg");
  write_text(tmp / "cut.jpg", jpeg.substr(0, jpeg.size() / 2));
  expect_image_error([&] { L.decode(tmp / "cut.jpg"); }, "cut.jpg", "truncated");
  std::string png = encode(red_blue_bgr(), ".png");
  write_text(tmp / "cut.png", png.substr(0, png.size() / 2));
  expect_image_error([&] { L.decode(tmp / "cut.png"); }, "cut.png", "truncated");
  std::string webp = encode(red_blue_bgr(), ".webp");
  write_text(tmp / "cut.webp", webp.substr(0, webp.size() - 10));
  expect_image_error([&] { L.decode(tmp / "cut.webp"); }, "cut.webp", "truncated");
  expect_image_error([&] { L.decode(tmp / "missing.jpg"); }, "missing.jpg", "no such file");
  expect_image_error([&] { L.decode(tmp.path()); }, tmp.path().string(), "directory");
  write_text(tmp / "anim.gif", std::string("GIF89a\x10\0\x10\0", 10) + std::string(20, '\0'));
  expect_image_error([&] { L.decode(tmp / "anim.gif"); }, "anim.gif", "GIF");
}

TEST(ImageLoader, RefusesHugeImagesBeforeDecoding) {
  TempDir tmp;
  // A real PNG header claiming 20000 x 20000 pixels; the data after it is never read.
  std::string png = encode(cv::Mat(1, 1, CV_8UC3, cv::Scalar(0)), ".png");
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) png[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xFF);
  };
  put32(16, 20000);
  put32(20, 20000);
  write_text(tmp / "huge.png", png);
  expect_image_error([&] { loader().decode(tmp / "huge.png"); }, "huge.png", "20000x20000");
  EXPECT_EQ(probe_image(png).width, 20000);
}

TEST(ImageLoader, AcceptsWrongExtensionsTinyImagesAndUnicodeNames) {
  TempDir tmp;
  auto L = loader();
  write_text(tmp / "actually_png.jpg", encode(red_blue_bgr(), ".png"));
  EXPECT_EQ(L.decode(tmp / "actually_png.jpg").cols, 40);
  write_text(tmp / "one.png", encode(cv::Mat(1, 1, CV_8UC3, cv::Scalar(0, 255, 0)), ".png"));
  std::vector<float> chw(3 * 8 * 8);
  L.load_into(tmp / "one.png", chw.data());
  EXPECT_NEAR(chw[64 + 10], 1.0f, 1e-6);  // green plane everywhere 255 -> 1.0
  auto unicode = tmp / "caf\xC3\xA9 photo \xE2\x9C\x93.png";
  write_text(unicode, encode(red_blue_bgr(), ".png"));
  EXPECT_EQ(L.decode(unicode).rows, 20);
}

TEST(ImageLoader, NormalisesResizesCropsAndFlips) {
  PreprocessSpec s;
  s.input_height = s.input_width = 4;
  s.mean = {0.5f, 0.25f, 0.0f};
  s.std = {0.5f, 0.25f, 1.0f};
  ImageLoader stretch(s);
  cv::Mat rgb(20, 40, CV_8UC3, cv::Scalar(255, 0, 51));  // R=255 G=0 B=51 (already RGB)
  std::vector<float> out(3 * 16);
  stretch.preprocess(rgb, out.data());
  EXPECT_NEAR(out[0], (1.0 - 0.5) / 0.5, 1e-5);
  EXPECT_NEAR(out[16], (0.0 - 0.25) / 0.25, 1e-5);
  EXPECT_NEAR(out[32], 51 / 255.0, 1e-5);

  // Left red / right blue, 40x20: a centre crop of the resized image keeps both halves; flipping
  // swaps them.
  cv::Mat rb;
  cv::cvtColor(red_blue_bgr(), rb, cv::COLOR_BGR2RGB);
  s.mean = {0, 0, 0};
  s.std = {1, 1, 1};
  s.resize = PreprocessSpec::Resize::kShorterSideCrop;
  s.resize_size = 4;  // 40x20 -> 8x4, centre 4x4 crop spans columns 2..5
  ImageLoader crop(s);
  crop.preprocess(rb, out.data());
  EXPECT_NEAR(out[0 * 16 + 0], 1.0, 0.05);  // R plane, left column: red
  EXPECT_NEAR(out[2 * 16 + 3], 1.0, 0.05);  // B plane, right column: blue
  crop.preprocess(rb, out.data(), /*flip=*/true);
  EXPECT_NEAR(out[2 * 16 + 0], 1.0, 0.05);  // mirrored: blue on the left
  s.bgr = true;
  ImageLoader bgr(s);
  bgr.preprocess(rb, out.data());
  EXPECT_NEAR(out[2 * 16 + 0], 1.0, 0.05);  // BGR order: plane 2 is red
}

// Pixels wait as 8-bit planes; normalise must give every value exactly the float the loader
// always wrote, x * (1 / (255 std)) + (-mean / std), with mean and std taken in RGB order.
TEST(ImageLoader, NormalisesEightBitPlanesPerChannel) {
  PreprocessSpec s;
  s.input_height = 16;
  s.input_width = 16;
  s.mean = {0.485f, 0.456f, 0.406f};
  s.std = {0.229f, 0.224f, 0.225f};
  std::vector<uint8_t> planes(2 * 3 * 256);
  for (size_t i = 0; i < planes.size(); ++i) planes[i] = static_cast<uint8_t>(i % 256);
  for (bool bgr : {false, true}) {
    s.bgr = bgr;
    std::vector<float> out(planes.size());
    s.normalise(planes.data(), out.data(), 2);
    for (size_t i = 0; i < planes.size(); ++i) {
      const size_t plane = (i / 256) % 3;
      const size_t c = bgr ? 2 - plane : plane;
      const float expected = static_cast<float>(planes[i]) * (1.0f / (255.0f * s.std[c])) + (-s.mean[c] / s.std[c]);
      ASSERT_EQ(out[i], expected) << "value " << i << (bgr ? " (BGR)" : " (RGB)");
    }
  }

  // And the values themselves, ImageNet's mean and std: (0 - 0.485) / 0.229, (128 / 255 - 0.456) /
  // 0.224, (255 / 255 - 0.406) / 0.225.
  s.bgr = false;
  const uint8_t px[3] = {0, 128, 255};
  std::vector<uint8_t> three(3 * 256);
  for (int p = 0; p < 3; ++p) std::fill(three.begin() + p * 256, three.begin() + (p + 1) * 256, px[p]);
  std::vector<float> values(three.size());
  s.normalise(three.data(), values.data(), 1);
  EXPECT_NEAR(values[0], -2.1179039f, 2e-6);
  EXPECT_NEAR(values[256], 0.2051821f, 2e-6);
  EXPECT_NEAR(values[512], 2.64f, 2e-6);

  // resize_to_planes keeps 8-bit values in the network's channel order.
  s.bgr = true;
  std::vector<uint8_t> got(3 * 256);
  ImageLoader(s).resize_to_planes(cv::Mat(20, 30, CV_8UC3, cv::Scalar(10, 20, 30)), got.data());  // R=10 G=20 B=30
  EXPECT_EQ(got[0], 30);
  EXPECT_EQ(got[256], 20);
  EXPECT_EQ(got[512 + 255], 10);
}

TEST(ImageLoader, ForgedHeaderSizesDoNotOverflow) {
  // Found by fuzz_image: 0xFFFFFFFF x 0xFFFFFFFF overflowed the pixel-count check.
  TempDir tmp;
  std::string png = encode(cv::Mat(1, 1, CV_8UC3, cv::Scalar(0)), ".png");
  for (int i = 16; i < 24; ++i) png[i] = '\xFF';
  write_text(tmp / "forged.png", png);
  expect_image_error([&] { loader().decode(tmp / "forged.png"); }, "forged.png", "exceeds the limit");
}

// Issue 27 B: libjpeg only warns about a photo whose data ends early (it fills the rest with
// grey). `head -c N photo.jpg; printf '\xff\xd9'` must be refused by name, not captioned.
TEST(ImageLoader, APartlyDecodedJpegIsRefusedNotGreyFilled) {
  TempDir tmp;
  cv::Mat noise(240, 320, CV_8UC3);
  cv::randu(noise, 0, 255);
  const std::string jpeg = encode(noise, ".jpg");
  write_text(tmp / "t.jpg", jpeg.substr(0, jpeg.size() / 2) + "\xFF\xD9");
  expect_image_error([&] { loader().decode(tmp / "t.jpg"); }, "t.jpg", "damaged JPEG");
  // A run of bytes inside the entropy-coded data overwritten: refused, by name, whatever libjpeg
  // makes of it (a bad Huffman code, a marker where none may be).
  std::string overwritten = jpeg;
  for (size_t i = overwritten.size() / 2; i < overwritten.size() / 2 + 64; ++i) overwritten[i] = static_cast<char>(0xFF);
  write_text(tmp / "overwritten.jpg", overwritten);
  EXPECT_THROW(loader().decode(tmp / "overwritten.jpg"), ImageError);
}

namespace {
// Our decoder's image equals cv::imdecode(bytes, flags)'s: size, type and every sample.
void expect_opencvs_pixels(const cv::Mat& ours, const std::string& bytes, int flags, const std::string& what) {
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
  const cv::Mat theirs = cv::imdecode(raw, flags);
  ASSERT_FALSE(theirs.empty()) << what;
  ASSERT_EQ(ours.size(), theirs.size()) << what;
  ASSERT_EQ(ours.type(), theirs.type()) << what;
  EXPECT_EQ(cv::norm(ours, theirs, cv::NORM_INF), 0) << what;
}
}  // namespace

// decode_jpeg gives exactly cv::imdecode(IMREAD_COLOR)'s pixels: baseline and progressive,
// restart markers, greyscale, CMYK, every EXIF orientation, and real photos where ../shared is.
TEST(ImageLoader, OurJpegDecodingIsOpenCvsPixelForPixel) {
  auto same = [](const std::string& bytes, const std::string& what) {
    expect_opencvs_pixels(decode_jpeg(bytes, what), bytes, cv::IMREAD_COLOR, what);
  };
  cv::Mat noise(37, 53, CV_8UC3);
  cv::randu(noise, 0, 255);
  std::vector<uchar> buf;
  cv::imencode(".jpg", noise, buf);
  const std::string baseline(buf.begin(), buf.end());
  same(baseline, "baseline 4:2:0");
  cv::imencode(".jpg", noise, buf, {cv::IMWRITE_JPEG_PROGRESSIVE, 1});
  same(std::string(buf.begin(), buf.end()), "progressive");
  cv::imencode(".jpg", noise, buf, {cv::IMWRITE_JPEG_RST_INTERVAL, 2, cv::IMWRITE_JPEG_QUALITY, 100});
  same(std::string(buf.begin(), buf.end()), "restart markers, quality 100");
  cv::Mat grey;
  cv::cvtColor(noise, grey, cv::COLOR_BGR2GRAY);
  cv::imencode(".jpg", grey, buf);
  same(std::string(buf.begin(), buf.end()), "greyscale");
  same(read_file(std::filesystem::path(CAPTIONER_SOURCE_DIR) / "tests/data/cmyk_red_blue.jpg"), "cmyk");
  for (uint16_t orientation = 1; orientation <= 8; ++orientation) {
    same(with_exif_orientation(baseline, orientation), "EXIF orientation " + std::to_string(orientation));
  }
  for (const auto& photo : flickr8k_images(20)) same(read_file(photo), photo.string());
}

// A JPEG at least twice what is needed decodes reduced in the DCT, pixel for pixel as OpenCV's
// IMREAD_REDUCED_COLOR_2/4/8, at the smallest scale that keeps the size asked for (upright);
// ImageLoader asks for its encoder's input unless told not to.
TEST(ImageLoader, LargeJpegsDecodeReducedNeverBelowWhatIsNeeded) {
  cv::Mat noise(300, 500, CV_8UC3);
  cv::randu(noise, 0, 255);
  const std::string jpeg = encode(noise, ".jpg");
  struct Case {
    cv::Size at_least;
    cv::Size expected;
    int opencv_flags;
  };
  for (const Case& c : {Case{{60, 30}, {63, 38}, cv::IMREAD_REDUCED_COLOR_8},   // 500 / 8 and 300 / 8, rounded up
                        Case{{60, 40}, {125, 75}, cv::IMREAD_REDUCED_COLOR_4},  // 38 rows are too few at 1/8
                        Case{{200, 150}, {250, 150}, cv::IMREAD_REDUCED_COLOR_2},
                        Case{{251, 10}, {500, 300}, cv::IMREAD_COLOR},  // not twice as wide
                        Case{{}, {500, 300}, cv::IMREAD_COLOR}}) {      // nothing asked: full size
    const std::string what = "at least " + std::to_string(c.at_least.width) + "x" + std::to_string(c.at_least.height);
    const cv::Mat got = decode_jpeg(jpeg, "noise.jpg", c.at_least);
    EXPECT_EQ(got.size(), c.expected) << what;
    expect_opencvs_pixels(got, jpeg, c.opencv_flags, what);
  }
  // Turned upright by EXIF (orientation 6: 300 wide, 500 high), the size asked for is upright too.
  const cv::Mat turned = decode_jpeg(with_exif_orientation(jpeg, 6), "turned.jpg", {30, 60});
  EXPECT_EQ(turned.size(), cv::Size(38, 63));
  // An orientation outside 1-8 turns nothing, so nothing is swapped when choosing the scale.
  EXPECT_EQ(decode_jpeg(with_exif_orientation(jpeg, 9), "odd.jpg", {30, 60}).size(), cv::Size(125, 75));

  TempDir tmp;
  write_text(tmp / "large.jpg", encode(cv::Mat(800, 1000, CV_8UC3, cv::Scalar(10, 200, 30)), ".jpg"));
  PreprocessSpec s;                                                                // 224 x 224, stretched
  EXPECT_EQ(ImageLoader(s).decode(tmp / "large.jpg").size(), cv::Size(500, 400));  // 1/4 would leave 200 rows
  ImageLoaderOptions full;
  full.reduced_jpeg_decode = false;
  EXPECT_EQ(ImageLoader(s, full).decode(tmp / "large.jpg").size(), cv::Size(1000, 800));
  s.resize = PreprocessSpec::Resize::kShorterSideCrop;  // shorter side 256 before the crop
  s.resize_size = 256;
  EXPECT_EQ(ImageLoader(s).decode(tmp / "large.jpg").size(), cv::Size(500, 400));
  s.resize_size = 401;
  EXPECT_EQ(ImageLoader(s).decode(tmp / "large.jpg").size(), cv::Size(1000, 800));
}

namespace {
// A PNG written chunk by chunk, for the kinds OpenCV's encoder never makes (palettes, 1-bit grey,
// tRNS, interlacing) and for damaged or odd metadata.
std::string png_chunk(const std::string& type, const std::string& data) {
  auto be32 = [](uint32_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
  const std::string body = type + data;
  return be32(static_cast<uint32_t>(data.size())) + body +
         be32(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}
std::string zlib_compress(const std::string& raw) {
  uLongf n = compressBound(static_cast<uLong>(raw.size()));
  std::string out(n, '\0');
  compress(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()));
  out.resize(n);
  return out;
}
// width x height, `depth` bits per sample, PNG colour type `color`; rows of `bytes_per_row`
// pseudo-random bytes, each led by filter byte 0. `extra`: chunks between IHDR and IDAT.
std::string make_png(int width, int height, int depth, int color, int bytes_per_row, const std::string& extra = "",
                     bool interlaced = false, size_t keep_rows = SIZE_MAX) {
  auto be32 = [](uint32_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
  std::string ihdr = be32(width) + be32(height) + char(depth) + char(color) + '\0' + '\0' + char(interlaced ? 1 : 0);
  std::string raw;
  uint32_t x = 12345;
  // Interlaced data is seven passes of other row sizes: all zero (filter 0, black), however the
  // rows fall, and exactly the size libpng reads for 8x8 8-bit RGB (passes of 1, 1, 1, 2, 2, 4, 4
  // rows of 1, 1, 2, 2, 4, 4, 8 pixels, each row led by its filter byte).
  if (interlaced) raw.assign(1 * 4 + 1 * 4 + 1 * 7 + 2 * 7 + 2 * 13 + 4 * 13 + 4 * 25, '\0');
  for (int y = 0; !interlaced && y < height && static_cast<size_t>(y) < keep_rows; ++y) {
    raw += '\0';
    for (int i = 0; i < bytes_per_row; ++i) raw += static_cast<char>((x = x * 1103515245 + 12345) >> 16);
  }
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) + extra + png_chunk("IDAT", zlib_compress(raw)) +
         png_chunk("IEND", "");
}
}  // namespace

// decode_png gives exactly cv::imdecode(IMREAD_UNCHANGED)'s pixels for every kind of PNG.
TEST(ImageLoader, OurPngDecodingIsOpenCvsPixelForPixel) {
  auto same = [](const std::string& bytes, const std::string& what) {
    expect_opencvs_pixels(decode_png(bytes, what), bytes, cv::IMREAD_UNCHANGED, what);
  };
  cv::Mat noise(23, 31, CV_16UC4);
  cv::randu(noise, 0, 65535);
  for (int channels : {1, 3, 4}) {
    for (int depth : {CV_8U, CV_16U}) {
      cv::Mat m;
      if (channels == 1) {
        cv::extractChannel(noise, m, 0);
      } else {
        cv::Mat rgb;
        cv::cvtColor(noise, rgb, cv::COLOR_BGRA2BGR);
        m = channels == 3 ? rgb : noise;
      }
      if (depth == CV_8U) m.convertTo(m, CV_8U, 1.0 / 257);
      same(encode(m, ".png"), std::to_string(channels) + " channels, " + (depth == CV_8U ? "8" : "16") + "-bit");
    }
  }
  const std::string palette = png_chunk("PLTE", std::string(3 * 256, '\x7f').replace(0, 6, "\x10\x20\x30\xf0\xe0\xd0"));
  same(make_png(9, 7, 8, 3, 9, palette), "palette");
  same(make_png(9, 7, 8, 3, 9, palette + png_chunk("tRNS", std::string("\x00\x80\xff", 3))), "palette with tRNS");
  same(make_png(13, 5, 1, 0, 2), "1-bit grey");
  same(make_png(13, 5, 4, 0, 7), "4-bit grey");
  same(make_png(6, 4, 8, 4, 12), "grey + alpha");
  same(make_png(6, 4, 16, 4, 24), "16-bit grey + alpha");
  same(make_png(6, 4, 8, 2, 18, png_chunk("tRNS", std::string("\x00\x10\x00\x20\x00\x30", 6))), "RGB with tRNS");
  same(make_png(6, 4, 8, 0, 6, png_chunk("tRNS", std::string("\x00\x10", 2))), "grey with tRNS");
  same(make_png(8, 8, 8, 2, 24, "", true), "interlaced");
}

// libpng's messages never reach stderr: metadata it cannot read is ignored (the pixels are those
// of the same PNG without it); data cut short or corrupt is one ImageError naming the file.
TEST(ImageLoader, PngMessagesAreNamedErrorsOrNothing) {
  TempDir tmp;
  const std::string plain = make_png(10, 6, 8, 2, 30);
  const std::string odd_metadata = png_chunk("iCCP", std::string("bogus\0\0", 7) + zlib_compress("not an ICC profile")) +
                                   png_chunk("tEXt", std::string("Comment\0hi", 10)).replace(20, 1, "\x01");  // a CRC error
  write_text(tmp / "odd.png", make_png(10, 6, 8, 2, 30, odd_metadata));
  write_text(tmp / "plain.png", plain);
  testing::internal::CaptureStderr();
  const cv::Mat odd = loader().decode(tmp / "odd.png");
  const cv::Mat clean = loader().decode(tmp / "plain.png");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(cv::norm(odd, clean, cv::NORM_INF), 0);

  write_text(tmp / "short.png", make_png(10, 6, 8, 2, 30, "", false, 3));
  testing::internal::CaptureStderr();
  expect_image_error([&] { loader().decode(tmp / "short.png"); }, "short.png", "damaged PNG");
  std::string corrupt = plain;
  corrupt[corrupt.size() - 30] ^= 0x55;  // inside IDAT: its CRC no longer matches
  write_text(tmp / "corrupt.png", corrupt);
  expect_image_error([&] { loader().decode(tmp / "corrupt.png"); }, "corrupt.png", "damaged PNG");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

// An animated WebP (VP8X with the animation flag) is named as such, not as corrupt data.
TEST(ImageLoader, AnAnimatedWebpIsNamedAsSuch) {
  TempDir tmp;
  auto le32 = [](uint32_t v) { return std::string{char(v), char(v >> 8), char(v >> 16), char(v >> 24)}; };
  const std::string vp8x = std::string("VP8X") + le32(10) + '\x02' + std::string(3, '\0') + std::string("\x0f\0\0\x0f\0\0", 6);
  const std::string anim = std::string("ANIM") + le32(6) + std::string(6, '\0');
  const std::string body = "WEBP" + vp8x + anim;
  write_text(tmp / "anim.webp", "RIFF" + le32(static_cast<uint32_t>(body.size())) + body);
  expect_image_error([&] { loader().decode(tmp / "anim.webp"); }, "anim.webp", "animated WebP is not supported");
}
