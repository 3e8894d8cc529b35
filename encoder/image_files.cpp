#include "encoder/image_files.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "encoder/image_loader.h"
#include "encoder/image_probe.h"

namespace captioner {

namespace fs = std::filesystem;

namespace {
bool looks_like_image(const fs::path& file) {
  if (has_image_extension(file)) return true;
  std::ifstream in(file, std::ios::binary);
  char head[64] = {};
  in.read(head, sizeof head);
  return !probe_image(std::string_view(head, static_cast<size_t>(in.gcount()))).format.empty();
}
}  // namespace

ImageFileList collect_images(const std::vector<std::string>& inputs, bool recursive) {
  ImageFileList out;
  for (const auto& input : inputs) {
    fs::path p(input);
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      out.problems.push_back(input + ": no such file or folder");
      continue;
    }
    if (!fs::is_directory(st)) {
      if (!fs::is_regular_file(st)) {
        // A FIFO would block forever on open() and a device never ends: neither is a photo.
        out.problems.push_back(input + ": not a regular file (a pipe, socket or device); captioner reads files only");
      } else {
        out.images.push_back(p);
      }
      continue;
    }
    std::vector<fs::path> found;
    auto consider = [&](const fs::directory_entry& e) {
      std::error_code ec2;
      if (e.is_symlink(ec2) && !fs::exists(e.path(), ec2)) {
        out.problems.push_back(e.path().string() + ": broken symbolic link");
        return;
      }
      if (!e.is_regular_file(ec2)) return;  // follows symlinks; skips folders, sockets, devices
      if (looks_like_image(e.path())) {
        found.push_back(e.path());
      } else {
        ++out.skipped_non_images;
      }
    };
    if (recursive) {
      // Symbolic links to folders are followed, but each real folder is entered once: a link to
      // a parent (`ln -s .. loop`) would otherwise recurse until the paths grow too long, and
      // list the same photos again under every detour.
      std::set<fs::path> entered{fs::weakly_canonical(p, ec)};
      fs::recursive_directory_iterator it(
          p, fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied, ec);
      for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        std::error_code ec2;
        if (it->is_directory(ec2)) {
          if (!entered.insert(fs::canonical(it->path(), ec2)).second || ec2) it.disable_recursion_pending();
          continue;
        }
        consider(*it);
      }
    } else {
      fs::directory_iterator it(p, fs::directory_options::skip_permission_denied, ec);
      for (; !ec && it != fs::directory_iterator(); it.increment(ec)) consider(*it);
    }
    if (ec) out.problems.push_back(input + ": cannot list folder: " + ec.message());
    std::sort(found.begin(), found.end());
    out.images.insert(out.images.end(), found.begin(), found.end());
  }
  return out;
}

}  // namespace captioner
