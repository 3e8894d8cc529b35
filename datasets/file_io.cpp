#include "datasets/file_io.h"

#include <signal.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

namespace captioner {

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw std::runtime_error("cannot read " + path.string() + ": it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path.string() + ": I/O error");
  return buffer.str();
}

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// ".<name>.tmp-<pid>-<random>": unique per writer, and naming the process that owns it.
static std::string temp_prefix(const fs::path& path) { return "." + path.filename().string() + ".tmp-"; }

static fs::path temp_sibling(const fs::path& path) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  return dir / (temp_prefix(path) + std::to_string(::getpid()) + "-" + hex64(rng()).substr(0, 8));
}

// Temporary siblings left by writers that were killed (kill -9, power cut): their process is gone,
// so nobody will ever finish them. Those of live processes (a concurrent run) are left alone.
static void remove_orphaned_temps(const fs::path& path) {
  const std::string prefix = temp_prefix(path);
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove(it->path(), rm);
    }
  }
}

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)), temp_(temp_sibling(path_)) {
  remove_orphaned_temps(path_);
  out_.open(temp_, std::ios::binary | std::ios::trunc);
  if (!out_) {
    throw std::runtime_error("cannot write " + path_.string() + ": " + std::strerror(errno));
  }
}

OutputLock::OutputLock(const fs::path& target) {
  const fs::path name = target.filename().empty() ? target.parent_path().filename() : target.filename();
  const fs::path folder = target.filename().empty() ? target.parent_path().parent_path() : target.parent_path();
  lock_file_ = (folder.empty() ? fs::path(".") : folder) / ("." + name.string() + ".lock");
  for (int attempt = 0; attempt < 100; ++attempt) {
    fd_ = ::open(lock_file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;  // best effort: the output's own writer names the real problem
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char buf[32] = {};
      const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      ::close(fd_);
      fd_ = -1;
      if (err != EWOULDBLOCK) return;  // a filesystem without flock: nothing to lock with
      std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
      pid.erase(pid.find_last_not_of(" \n") + 1);
      throw std::runtime_error(target.string() + " is in use by another captioner run" +
                               (pid.empty() ? "" : " (pid " + pid + ")") + ": wait for it to finish, or choose another output");
    }
    // The previous holder removes the lock file on release; if it did so between our open and
    // flock, we hold a lock on a file nobody else will open: try again with the one on disk.
    struct stat held = {};
    struct stat on_disk = {};
    if (::fstat(fd_, &held) == 0 && ::stat(lock_file_.c_str(), &on_disk) == 0 && held.st_ino == on_disk.st_ino &&
        held.st_dev == on_disk.st_dev) {
      const std::string pid = std::to_string(::getpid()) + "\n";
      if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
        // the pid is only for the message another run prints
      }
      return;
    }
    ::close(fd_);
    fd_ = -1;
  }
}

OutputLock::~OutputLock() {
  if (fd_ < 0) return;
  ::unlink(lock_file_.c_str());  // while still held, so no one else can be holding this file
  ::close(fd_);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) {
    out_.close();
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicFileWriter::commit() {
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write " + path_.string() + ": write failed (disk full?)");
  out_.close();
  fsync_path(temp_);
  std::error_code ec;
  fs::rename(temp_, path_, ec);
  if (ec) {
    const std::string why = ec.message();  // before the clean-up overwrites ec
    fs::remove(temp_, ec);
    throw std::runtime_error("cannot write " + path_.string() + ": " + why +
                             (fs::is_directory(path_, ec) ? " (it is a folder)" : ""));
  }
  committed_ = true;
  fsync_path(path_.has_parent_path() ? path_.parent_path() : fs::path("."));
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  AtomicFileWriter writer(path);
  writer.stream().write(contents.data(), static_cast<std::streamsize>(contents.size()));
  writer.commit();
}

void append_line(const fs::path& path, std::string_view line) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out.write(line.data(), static_cast<std::streamsize>(line.size()));
  out.put('\n');
  out.flush();
  if (!out) throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(errno));
}

uint64_t fnv1a64(std::string_view data, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string hex64(uint64_t value) {
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) out[i] = digits[value & 0xF];
  return out;
}

}  // namespace captioner
