// File helpers every module shares: whole-file reads whose errors name the file, and atomic writes
// (temp file in the same folder, fsync, rename) so a crash never leaves a half-written output.
// Every file captioner creates is created here, never through a link someone planted (O_NOFOLLOW,
// O_EXCL), and nothing it did not create is ever truncated.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>

namespace captioner {

namespace fs = std::filesystem;

// Reads a whole file; throws std::runtime_error("cannot read F: reason").
std::string read_file(const fs::path& path);

// Replaces `path` with `contents` atomically: readers see the old file or the new one, never a mix.
void write_file_atomic(const fs::path& path, std::string_view contents);

// Appends `line` and a newline to `path` (a log), created if missing; throws "cannot write F:
// reason" when the line does not reach the file (disk full, folder gone) or when `path` is a
// symbolic link or not a regular file (a log is never written through a link).
void append_line(const fs::path& path, std::string_view line);

// Streams into a temporary sibling of `path`; commit() makes it visible under `path` atomically.
// Destroying the writer without commit() removes the temporary file and leaves `path` untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(fs::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  std::ostream& stream() { return out_; }
  const fs::path& temp_path() const { return temp_; }
  void commit();

 private:
  fs::path path_;
  fs::path temp_;
  std::unique_ptr<std::streambuf> file_;  // over the descriptor create_new_file() returned
  std::ostream out_{nullptr};
  bool committed_ = false;
};

// Keeps two runs from writing one output file or training into one folder at once: an advisory
// lock (flock) on `.<name>.lock` beside `target`, held for this object's life. The kernel drops it
// when the process dies, so a killed run never leaves a stale lock behind.
class OutputLock {
 public:
  // Throws "<target> is in use by another captioner run (pid N) ..." when another process holds
  // it, and refuses a lock name that is a symbolic link or not a regular file (a planted link is
  // never followed). Where no lock file can be made (no such folder, read-only), nothing is
  // locked: writing the output itself will report that. The pid is written only into a lock file
  // this run created; a stale one (left by kill -9) is replaced, never truncated.
  explicit OutputLock(const fs::path& target);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  fs::path lock_file_;
  int fd_ = -1;
  bool owns_name_ = false;  // the file at lock_file_ is ours to remove on release
};

// fsyncs a file or directory so a rename survives power loss; best effort on filesystems without it.
void fsync_path(const fs::path& path);

// 64-bit FNV-1a: a stable fingerprint for cache keys (not a cryptographic hash).
uint64_t fnv1a64(std::string_view data, uint64_t seed = 1469598103934665603ULL);
std::string hex64(uint64_t value);

}  // namespace captioner
