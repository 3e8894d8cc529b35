#include "tests/test_util.h"

#include <algorithm>

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

namespace captioner::test {

fs::path shared_dir() {
  if (const char* env = std::getenv("CAPTIONER_SHARED")) {
    return fs::is_directory(env) ? fs::path(env) : fs::path();
  }
  fs::path p = fs::path(CAPTIONER_SHARED_DIR);
  std::error_code ec;
  return fs::is_directory(p / "datasets", ec) ? fs::canonical(p) : fs::path();
}

std::vector<fs::path> flickr8k_images(size_t n) {
  std::vector<fs::path> files;
  fs::path dir = shared_dir() / "datasets/flickr8k/images";
  std::error_code ec;
  if (shared_dir().empty() || !fs::is_directory(dir, ec)) return files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".jpg") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.size() > n) files.resize(n);
  return files;
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("captioner-test-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

static std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

CommandResult run_shell(const std::string& command) {
  TempDir tmp;
  std::string cmd = command + " >" + (tmp / "out").string() + " 2>" + (tmp / "err").string();
  int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(tmp / "out");
  r.err = slurp(tmp / "err");
  return r;
}

CommandResult run_cli(const std::string& args) { return run_shell(std::string("'") + CAPTIONER_BINARY + "' " + args); }

void expect_one_line_error(const CommandResult& r, int exit_code, const std::vector<std::string>& fragments) {
  EXPECT_EQ(r.exit_code, exit_code) << r.err;
  EXPECT_EQ(lines(r.err).size(), 1u) << "expected one line:\n" << r.err;
  for (const auto& f : fragments) EXPECT_NE(r.err.find(f), std::string::npos) << "\"" << f << "\" not in: " << r.err;
}

size_t count_lines(const std::string& text) {
  auto all = lines(text);
  return static_cast<size_t>(std::count_if(all.begin(), all.end(), [](const std::string& l) { return !l.empty(); }));
}

}  // namespace captioner::test
