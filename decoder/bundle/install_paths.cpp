#include "decoder/bundle/install_paths.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace captioner {

namespace fs = std::filesystem;

fs::path find_installed_file(const fs::path& rel, const fs::path& probe) {
  std::vector<fs::path> candidates;
  // Beside the program (bin/captioner), and beside this code's own file when it is a shared
  // library that another program loaded (lib/libcaptioner.so through the C API).
  std::vector<fs::path> homes;
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) homes.push_back(fs::path(std::string(buf, static_cast<size_t>(n))).parent_path());
  Dl_info self{};
  if (::dladdr(reinterpret_cast<void*>(&find_installed_file), &self) != 0 && self.dli_fname && *self.dli_fname) {
    std::error_code ec;
    const fs::path lib_dir = fs::weakly_canonical(fs::path(self.dli_fname), ec).parent_path();
    if (!ec && (homes.empty() || lib_dir != homes.front())) homes.push_back(lib_dir);
  }
  for (const auto& dir : homes) {
    candidates.push_back(dir / ".." / rel);                  // build/ in the source tree
    candidates.push_back(dir / "../share/captioner" / rel);  // installed: bin/ or lib/ beside share/
  }
  candidates.push_back(fs::current_path() / rel);
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::exists(probe.empty() ? c : c / probe, ec)) return c.lexically_normal();
  }
  return candidates.front().lexically_normal();
}

fs::path default_model_dir() {
  if (const char* env = std::getenv("CAPTIONER_MODEL"); env && *env) return env;
  return find_installed_file("models/default", "config.json");
}

fs::path default_encoder_file() { return find_installed_file("models/encoders/mobilenet_v2.pt", ""); }

fs::path default_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "captioner";
  if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache/captioner";
  // No home: a folder of this user's own under /tmp, never one that another user could have
  // created first and filled with planted features.
  return fs::temp_directory_path() / ("captioner-cache-" + std::to_string(::getuid()));
}

}  // namespace captioner
