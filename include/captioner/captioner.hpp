// captioner's C++ API: a thin RAII layer over the C API (captioner.h), header-only, so a C++
// program links the same libcaptioner and needs neither LibTorch's nor OpenCV's headers.
//
//   captioner::api::Model model;                          // the installed default model
//   std::cout << model.caption_file("dog.jpg") << "\n";   // throws captioner::api::Error
#pragma once

#include <captioner/captioner.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace captioner::api {

// A failure the C API reported: its one line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Caption {
  std::string text;
  double log_prob = 0;
  std::string tag;  // empty: no tag guided it
};

// One photo of a batch: a caption, or the error that kept it from having one.
struct Result {
  std::optional<Caption> caption;
  std::string error;
};

class Model {
 public:
  // model_dir empty: $CAPTIONER_MODEL, else the installed default model.
  explicit Model(const std::string& model_dir = "", const captioner_params& params = captioner_default_params())
      : model_(captioner_load_with_params(model_dir.empty() ? nullptr : model_dir.c_str(), &params), &captioner_free) {
    if (!model_) throw Error(captioner_last_error());
  }

  std::string caption_file(const std::string& path) const { return take(captioner_caption_file(model_.get(), path.c_str())); }
  std::string caption_bytes(const void* data, size_t size) const {
    return take(captioner_caption_bytes(model_.get(), data, size));
  }

  std::vector<Result> caption_files(const std::vector<std::string>& paths) const {
    std::vector<const char*> names;
    for (const auto& p : paths) names.push_back(p.c_str());
    std::vector<captioner_result> raw(paths.size());
    if (captioner_caption_files(model_.get(), names.data(), names.size(), raw.data()) < 0) throw Error(captioner_last_error());
    std::vector<Result> out;
    for (auto& r : raw) {
      Result one;
      if (r.caption) {
        one.caption = Caption{r.caption, r.log_prob, r.tag ? r.tag : ""};
      } else {
        one.error = r.error ? r.error : "";
      }
      captioner_result_clear(&r);
      out.push_back(std::move(one));
    }
    return out;
  }

  static std::string version() { return captioner_version(); }

 private:
  static std::string take(char* text) {
    if (!text) throw Error(captioner_last_error());
    std::string out(text);
    captioner_free_string(text);
    return out;
  }

  std::unique_ptr<captioner_model, void (*)(captioner_model*)> model_;
};

}  // namespace captioner::api
