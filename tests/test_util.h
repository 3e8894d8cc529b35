// Helpers shared by the tests: where ../shared is, scratch directories, running the CLI.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <filesystem>
#include <string>
#include <vector>

namespace captioner::test {

namespace fs = std::filesystem;

// ../shared beside the checkout (override with CAPTIONER_SHARED); empty when absent.
fs::path shared_dir();

// The first n Flickr8k photos of ../shared in name order (fewer when absent).
std::vector<fs::path> flickr8k_images(size_t n);

// Skips the current test with a clear message when ../shared is absent.
#define REQUIRE_SHARED()                                                                        \
  do {                                                                                          \
    if (::captioner::test::shared_dir().empty())                                                \
      GTEST_SKIP() << "../shared not found beside the checkout (set CAPTIONER_SHARED to point " \
                      "at it); this test needs its real data";                                  \
  } while (0)

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_text(const fs::path& path, const std::string& text);

// The lines of a text (empty ones included), without their newlines.
std::vector<std::string> lines(const std::string& text);
// How many non-empty lines a text has.
size_t count_lines(const std::string& text);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `captioner` binary with the given arguments (shell-quoted by the caller).
CommandResult run_cli(const std::string& args);
CommandResult run_shell(const std::string& command);

// The one expectation every refused command shares: the given exit code, stderr exactly one line,
// and that line containing each fragment (the file named, what is wrong).
void expect_one_line_error(const CommandResult& r, int exit_code, const std::vector<std::string>& fragments);

// The library's counterpart: `fn` throws, and the message holds each fragment.
template <typename Fn>
void expect_error_message(Fn fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << (fragments.empty() ? std::string() : fragments.front());
  } catch (const std::exception& e) {
    const std::string what = e.what();
    for (const auto& f : fragments) EXPECT_NE(what.find(f), std::string::npos) << "\"" << f << "\" not in: " << what;
  }
}

}  // namespace captioner::test
