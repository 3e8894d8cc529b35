// Expands the command line's files and folders into the list of images to caption: folders are
// scanned (recursively on request) for files that are images by extension or by content; files
// named explicitly are always taken, so a bad one is reported rather than silently dropped.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace captioner {

struct ImageFileList {
  std::vector<std::filesystem::path> images;  // sorted within each folder, inputs in given order
  std::vector<std::string> problems;          // one line for each input or file found that is not captioned
                                              // (missing, unreadable folder, FIFO, HEIC/AVIF/JPEG 2000...)
  size_t skipped_non_images = 0;              // files in scanned folders that are not images (text, video...)
  size_t skipped_folders = 0;                 // subfolders not entered (without --recursive)
};

ImageFileList collect_images(const std::vector<std::string>& inputs, bool recursive);

}  // namespace captioner
