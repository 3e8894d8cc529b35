#include "datasets/file_io.h"

#include <signal.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

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
  // One read into a string sized from the file (a stream buffer copied twice cost ~14 ms of a
  // 7.7 MB encoder's load); a file that grows or shrinks meanwhile is still read to its end.
  std::string bytes;
  const auto size = fs::file_size(path, ec);
  try {
    if (!ec) bytes.resize(static_cast<size_t>(size));
  } catch (const std::exception&) {  // bad_alloc, length_error: a huge (sparse) file
    throw std::runtime_error("cannot read " + path.string() + ": " + std::to_string(size) + " bytes do not fit in memory");
  }
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) throw std::runtime_error("cannot read " + path.string() + ": I/O error");
  if (!in.eof() || bytes.empty()) {
    in.clear();
    std::ostringstream rest;
    rest << in.rdbuf();
    if (in.bad()) throw std::runtime_error("cannot read " + path.string() + ": I/O error");
    bytes += rest.str();
  }
  return bytes;
}

void fsync_path(const fs::path& path) {
  // O_NONBLOCK: a FIFO put where a file was expected must not hang the run.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

namespace {

// Writes all `size` bytes, retrying short writes and EINTR; false (errno set, EIO for a write
// that took nothing) when they do not all reach the file.
bool write_all(int fd, const char* data, size_t size) {
  for (const char* p = data; p < data + size;) {
    const ssize_t n = ::write(fd, p, static_cast<size_t>(data + size - p));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    p += n;
  }
  return true;
}

// An output stream buffer over a descriptor this process created: the buffer goes out with
// write(2), so a failure (ENOSPC, EIO) fails the stream, and commit() fsyncs the same descriptor.
class FileDescriptorBuffer : public std::streambuf {
 public:
  explicit FileDescriptorBuffer(int fd) : fd_(fd), buffer_(1 << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  ~FileDescriptorBuffer() override { close(); }

  // Writes out the buffer, fsyncs and closes; false (errno set) when any byte did not reach the disk.
  bool finish() {
    const bool ok = sync() == 0 && ::fsync(fd_) == 0;
    const int err = errno;
    close();
    errno = err;
    return ok;
  }

 protected:
  int_type overflow(int_type c) override {
    if (sync() != 0) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }

  int sync() override {
    if (fd_ < 0 || !write_all(fd_, pbase(), static_cast<size_t>(pptr() - pbase()))) return -1;
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return 0;
  }

 private:
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_;
  std::vector<char> buffer_;
};

// ".<name>.tmp-<pid>-<random>": unique per writer, and naming the process that owns it.
std::string temp_prefix(const fs::path& path) { return "." + path.filename().string() + ".tmp-"; }

fs::path temp_sibling(const fs::path& path) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  return dir / (temp_prefix(path) + std::to_string(::getpid()) + "-" + hex64(rng()).substr(0, 8));
}

// Temporary siblings left by writers that were killed (kill -9, power cut): their process is gone,
// so nobody will ever finish them. Those of live processes (a concurrent run) are left alone.
void remove_orphaned_temps(const fs::path& path) {
  const std::string prefix = temp_prefix(path);
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove(it->path(), rm);  // a link is removed, never followed
    }
  }
}

[[noreturn]] void refuse_lock(const fs::path& target, const fs::path& lock_file, const std::string& why) {
  throw std::runtime_error("cannot lock " + target.string() + ": " + lock_file.string() + " " + why +
                           " (captioner never writes through a file it did not create: remove it and run again)");
}

}  // namespace

namespace {
// Only a regular file (or nothing yet) is replaced. rename() would turn a device (/dev/null), a
// FIFO or a socket into a plain file, and replace a symbolic link itself (/dev/stdout, or a link
// someone else made) rather than write where it points: both are refused, and left as they are.
void refuse_special_target(const fs::path& path) {
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(path, ec))) {
    throw std::runtime_error("cannot write " + path.string() + ": it is a symbolic link (to " +
                             fs::read_symlink(path, ec).string() +
                             "); captioner neither writes through links nor replaces them: give the path itself");
  }
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st) || fs::is_regular_file(st) || fs::is_directory(st)) return;
  throw std::runtime_error("cannot write " + path.string() +
                           ": not a regular file (a device, pipe or socket, or a link to one); captioner writes "
                           "only files (leave -o out to write to standard output)");
}
}  // namespace

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)), temp_(temp_sibling(path_)) {
  refuse_special_target(path_);
  remove_orphaned_temps(path_);
  // A new file under a fresh random name: never one that is already there, nor a planted link.
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) throw std::runtime_error("cannot write " + path_.string() + ": " + std::strerror(errno));
  file_ = std::make_unique<FileDescriptorBuffer>(fd);
  out_.rdbuf(file_.get());
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) {
    file_.reset();
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicFileWriter::commit() {
  out_.flush();
  errno = 0;
  if (!out_ || !static_cast<FileDescriptorBuffer*>(file_.get())->finish()) {
    const int err = errno;
    throw std::runtime_error("cannot write " + path_.string() + ": " + (err ? std::strerror(err) : "write failed") +
                             (err == ENOSPC || err == 0 ? " (disk full?)" : ""));
  }
  refuse_special_target(path_);  // again: it may have appeared while the file was written
  // rename() replaces the name itself: a link planted at `path` is replaced, its target untouched.
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

OutputLock::OutputLock(const fs::path& target) {
  const fs::path name = target.filename().empty() ? target.parent_path().filename() : target.filename();
  const fs::path folder = target.filename().empty() ? target.parent_path().parent_path() : target.parent_path();
  lock_file_ = (folder.empty() ? fs::path(".") : folder) / ("." + name.string() + ".lock");
  for (int attempt = 0; attempt < 100; ++attempt) {
    // A new lock file, or else the one already there; never through a symbolic link (O_NOFOLLOW),
    // and O_NONBLOCK so that a FIFO planted under the name cannot hang the open.
    bool created = true;
    fd_ = ::open(lock_file_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno == EEXIST) {
      created = false;
      fd_ = ::open(lock_file_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
      if (fd_ < 0 && errno == ENOENT) continue;  // its holder released it meanwhile
    }
    if (fd_ < 0) {
      if (errno == ELOOP) refuse_lock(target, lock_file_, "is a symbolic link");
      return;  // best effort: the output's own writer names the real problem
    }
    struct stat held = {};
    if (::fstat(fd_, &held) != 0 || !S_ISREG(held.st_mode)) {
      ::close(fd_);
      fd_ = -1;
      refuse_lock(target, lock_file_, "is not a regular file");
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char buf[32] = {};
      const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      ::close(fd_);
      fd_ = -1;
      if (err != EWOULDBLOCK) return;  // a filesystem without flock: nothing to lock with
      std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
      pid.erase(pid.find_last_not_of(" \n") + 1);
      if (pid.find_first_not_of("0123456789") != std::string::npos) pid.clear();  // not a pid: not ours to quote
      throw std::runtime_error(target.string() + " is in use by another captioner run" +
                               (pid.empty() ? "" : " (pid " + pid + ")") + ": wait for it to finish, or choose another output");
    }
    // The previous holder removes the lock file on release; if it did so between our open and
    // flock, we hold a lock on a file nobody else will open: try again with the one on disk.
    struct stat on_disk = {};
    if (::lstat(lock_file_.c_str(), &on_disk) != 0 || held.st_ino != on_disk.st_ino || held.st_dev != on_disk.st_dev) {
      ::close(fd_);
      fd_ = -1;
      continue;
    }
    if (!created) {
      // A stale lock (its run was killed) or a file someone else put there: we hold it, so no run
      // is using it. Replace it with one of our own rather than write into it; where it cannot be
      // removed (a sticky folder, another owner), hold it as it is and leave its contents alone.
      if (::unlink(lock_file_.c_str()) == 0) {
        ::close(fd_);
        fd_ = -1;
        continue;
      }
      return;
    }
    owns_name_ = true;
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
      // the pid is only for the message another run prints
    }
    return;
  }
}

OutputLock::~OutputLock() {
  if (fd_ < 0) return;
  if (owns_name_) ::unlink(lock_file_.c_str());  // while still held, so no one else can be holding this file
  ::close(fd_);
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  AtomicFileWriter writer(path);
  writer.stream().write(contents.data(), static_cast<std::streamsize>(contents.size()));
  writer.commit();
}

void append_line(const fs::path& path, std::string_view line) {
  // O_NOFOLLOW: a log is never appended to through a link; O_NONBLOCK: nor does a FIFO hang it.
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0666);
  if (fd < 0) {
    const int err = errno;
    throw std::runtime_error("cannot write " + path.string() + ": " +
                             (err == ELOOP ? std::string("it is a symbolic link (captioner does not write through links)")
                                           : std::string(std::strerror(err))));
  }
  struct stat st = {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error("cannot write " + path.string() + ": not a regular file");
  }
  std::string text(line);
  text += '\n';
  const int err = write_all(fd, text.data(), text.size()) ? 0 : errno;
  ::close(fd);
  if (err) throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(err));
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
