#include "encoder/image_probe.h"

#include <cctype>

#include <cstring>

namespace captioner {
namespace {

uint32_t be16(const unsigned char* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t be32(const unsigned char* p) { return (be16(p) << 16) | be16(p + 2); }
uint32_t le16(const unsigned char* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
uint32_t le32(const unsigned char* p) { return le16(p) | (le16(p + 2) << 16); }

void probe_jpeg(const unsigned char* p, size_t n, ImageHeader& h) {
  size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return;  // lost sync: corrupt
    unsigned char marker = p[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) {
      i += 2;
      continue;
    }
    if (marker == 0xD9 || marker == 0xDA) return;  // end, or scan data before any frame header
    uint32_t len = be16(p + i + 2);
    bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 9 > n) return;
      h.height = be16(p + i + 5);
      h.width = be16(p + i + 7);
      return;
    }
    i += 2 + len;
  }
}

void probe_webp(const unsigned char* p, size_t n, ImageHeader& h) {
  if (n < 30) return;
  if (std::memcmp(p + 12, "VP8 ", 4) == 0) {
    h.width = le16(p + 26) & 0x3FFF;
    h.height = le16(p + 28) & 0x3FFF;
  } else if (std::memcmp(p + 12, "VP8L", 4) == 0) {
    const unsigned char* b = p + 21;
    h.width = 1 + (int64_t(b[0]) | (int64_t(b[1] & 0x3F) << 8));
    h.height = 1 + ((int64_t(b[1]) >> 6) | (int64_t(b[2]) << 2) | (int64_t(b[3] & 0x0F) << 10));
  } else if (std::memcmp(p + 12, "VP8X", 4) == 0) {
    h.width = 1 + (int64_t(p[24]) | (int64_t(p[25]) << 8) | (int64_t(p[26]) << 16));
    h.height = 1 + (int64_t(p[27]) | (int64_t(p[28]) << 8) | (int64_t(p[29]) << 16));
  }
}

// Netpbm (PBM/PGM/PPM, P1-P6): "P6", then width and height as decimal text, separated by
// whitespace and '#' comments.
void probe_pnm(const unsigned char* p, size_t n, ImageHeader& h) {
  size_t i = 2;
  auto number = [&]() -> int64_t {
    for (;;) {
      while (i < n && std::isspace(p[i])) ++i;
      if (i < n && p[i] == '#') {
        while (i < n && p[i] != '\n') ++i;
        continue;
      }
      break;
    }
    int64_t v = 0;
    size_t digits = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9' && digits < 9) v = v * 10 + (p[i++] - '0'), ++digits;
    return digits ? v : 0;
  };
  h.width = number();
  h.height = h.width ? number() : 0;
}

void probe_tiff(const unsigned char* p, size_t n, ImageHeader& h) {
  bool le = p[0] == 'I';
  auto u16 = [&](size_t o) { return le ? le16(p + o) : be16(p + o); };
  auto u32 = [&](size_t o) { return le ? le32(p + o) : be32(p + o); };
  size_t ifd = u32(4);
  if (ifd + 2 > n) return;
  uint32_t count = u16(ifd);
  for (uint32_t k = 0; k < count; ++k) {
    size_t e = ifd + 2 + 12 * size_t(k);
    if (e + 12 > n) return;
    uint32_t tag = u16(e), type = u16(e + 2);
    int64_t value = type == 3 ? u16(e + 8) : u32(e + 8);
    if (tag == 256) h.width = value;
    if (tag == 257) h.height = value;
  }
}

}  // namespace

ImageHeader probe_image(std::string_view bytes) {
  ImageHeader h;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) {
    h.format = "jpeg";
    probe_jpeg(p, n, h);
  } else if (n >= 8 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) {
    h.format = "png";
    if (n >= 24) {
      h.width = be32(p + 16);
      h.height = be32(p + 20);
    }
  } else if (n >= 2 && p[0] == 'B' && p[1] == 'M') {
    h.format = "bmp";
    if (n >= 26) {
      h.width = static_cast<int32_t>(le32(p + 18));
      int32_t height = static_cast<int32_t>(le32(p + 22));
      h.height = height < 0 ? -int64_t(height) : height;  // negative: stored top-down
    }
  } else if (n >= 12 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) {
    h.format = "webp";
    probe_webp(p, n, h);
  } else if (n >= 8 && (std::memcmp(p, "II*\0", 4) == 0 || std::memcmp(p, "MM\0*", 4) == 0)) {
    h.format = "tiff";
    probe_tiff(p, n, h);
  } else if (n >= 3 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6' && std::isspace(p[2])) {
    h.format = "pnm";
    probe_pnm(p, n, h);
  } else if (n >= 10 && (std::memcmp(p, "GIF87a", 6) == 0 || std::memcmp(p, "GIF89a", 6) == 0)) {
    h.format = "gif";
    h.width = le16(p + 6);
    h.height = le16(p + 8);
  }
  return h;
}

bool looks_complete(const ImageHeader& header, std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  if (header.format == "jpeg") {
    // Some writers pad after the marker; allow a little trailing data.
    size_t stop = n > 4096 ? n - 4096 : 0;
    for (size_t i = n; i >= stop + 2; --i) {
      if (p[i - 2] == 0xFF && p[i - 1] == 0xD9) return true;
    }
    return false;
  }
  if (header.format == "png") {
    size_t stop = n > 4096 ? n - 4096 : 0;
    for (size_t i = n; i >= stop + 8; --i) {
      if (std::memcmp(p + i - 8, "IEND", 4) == 0) return true;
    }
    return false;
  }
  if (header.format == "webp") return n >= 8 && n >= size_t(le32(p + 4)) + 8;
  if (header.format == "bmp") return n >= 6 && n >= size_t(le32(p + 2));
  return true;
}

}  // namespace captioner
