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

// Photos in formats this build cannot decode: named in the problems, never passed over in silence.
std::string unsupported_photo_format(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".heic" || ext == ".heif" || ext == ".hif") return "HEIC/HEIF";
  if (ext == ".avif") return "AVIF";
  if (ext == ".jp2" || ext == ".j2k" || ext == ".jpf" || ext == ".jpx" || ext == ".jpm") return "JPEG 2000";
  if (ext == ".jxl") return "JPEG XL";
  if (ext == ".svg" || ext == ".svgz") return "SVG";
  for (const char* raw : {".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf"}) {
    if (ext == raw) return "camera raw";
  }
  return "";
}

// One folder given on the command line: its photos (sorted), and a problem line for everything in
// it that is not captioned and is not plainly another kind of file (those are only counted).
void scan_folder(const fs::path& root, bool recursive, ImageFileList& out) {
  std::vector<fs::path> found;
  std::error_code ec;
  // Symbolic links to folders are followed, but each real folder is entered once: a link to a
  // parent (`ln -s .. loop`) would otherwise recurse until the paths grow too long, and list the
  // same photos again under every detour.
  std::set<fs::path> entered{fs::weakly_canonical(root, ec)};
  std::vector<fs::path> pending{root};
  while (!pending.empty()) {
    const fs::path dir = pending.back();
    pending.pop_back();
    std::error_code list_error;
    fs::directory_iterator it(dir, list_error);
    for (; !list_error && it != fs::directory_iterator(); it.increment(list_error)) {
      const fs::path& path = it->path();
      std::error_code e;
      const fs::file_status st = it->status(e);  // follows links
      if (it->is_symlink(e) && !fs::exists(st)) {
        out.problems.push_back(path.string() + ": broken symbolic link");
      } else if (fs::is_directory(st)) {
        if (!recursive) {
          ++out.skipped_folders;
        } else if (entered.insert(fs::canonical(path, e)).second && !e) {
          pending.push_back(path);
        }
      } else if (!fs::is_regular_file(st)) {
        out.problems.push_back(printable_name(path.string()) +
                               ": not a regular file (a pipe, socket or device); captioner reads files only");
      } else if (const std::string format = unsupported_photo_format(path); !format.empty()) {
        out.problems.push_back(printable_name(path.string()) + ": " + format +
                               " images are not supported (convert to JPEG or PNG)");
      } else if (looks_like_image(path)) {
        found.push_back(path);
      } else {
        ++out.skipped_non_images;
      }
    }
    // An unreadable folder (or subfolder) is named, never skipped quietly.
    if (list_error) out.problems.push_back(printable_name(dir.string()) + ": cannot list folder: " + list_error.message());
  }
  std::sort(found.begin(), found.end());
  out.images.insert(out.images.end(), found.begin(), found.end());
}
}  // namespace

ImageFileList collect_images(const std::vector<std::string>& inputs, bool recursive) {
  ImageFileList out;
  for (const auto& input : inputs) {
    fs::path p(input);
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      out.problems.push_back(printable_name(input) + ": no such file or folder");
    } else if (fs::is_directory(st)) {
      scan_folder(p, recursive, out);
    } else if (!fs::is_regular_file(st)) {
      // A FIFO would block forever on open() and a device never ends: neither is a photo.
      out.problems.push_back(printable_name(input) +
                             ": not a regular file (a pipe, socket or device); captioner reads files only");
    } else {
      out.images.push_back(p);  // named explicitly: taken, so a bad one is reported by the loader
    }
  }
  return out;
}

}  // namespace captioner
