// Loaders read files, so fuzz inputs are written to one scratch file per process first.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

inline std::string fuzz_file(const uint8_t* data, size_t size, const std::string& suffix) {
  static const std::string base = "/tmp/captioner-fuzz-" + std::to_string(::getpid());
  std::string path = base + suffix;
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}
