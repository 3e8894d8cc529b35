// include/captioner/captioner.h over the library: a loaded model is a ModelBundle, its Encoder
// and a CaptionPipeline, the same path `captioner caption` takes, so a photo gets the CLI's
// caption. Every entry point turns exceptions into NULL / -1 and one line in captioner_last_error().
#include <captioner/captioner.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "decoder/bundle/install_paths.h"
#include "decoder/pipeline/caption_pipeline.h"
#include "decoder/pipeline/caption_service.h"

struct captioner_model {
  captioner::ModelBundle bundle;
  std::optional<captioner::Encoder> encoder;
  captioner::CaptionPipelineOptions options;           // as loaded: the model's decoding, the caller's params
  std::optional<captioner::CaptionPipeline> pipeline;  // captioner_caption_files: a folder's worth, streamed
  std::mutex pipeline_mutex;                           // one captioner_caption_files call at a time: it uses every core
  // The other calls (a photo or a few, from any number of threads) are batched together here.
  // Last: its threads stop before what they use is destroyed.
  std::optional<captioner::CaptionService> service;
};

namespace {

thread_local std::string g_last_error;

void set_error(const std::string& message) {
  const size_t nl = message.find('\n');  // one line: a LibTorch message may run on
  g_last_error = nl == std::string::npos ? message : message.substr(0, nl);
}

char* copy_string(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (!out) return nullptr;
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

// Runs `body`, turning any exception into `failed` and this thread's last error.
template <typename Body, typename Result>
Result guarded(Body body, Result failed) {
  try {
    g_last_error.clear();
    return body();
  } catch (const c10::Error& e) {
    set_error(std::string("internal error in LibTorch: ") + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
  } catch (const std::exception& e) {
    set_error(e.what());
  }
  return failed;
}

void check_params(const captioner_params& p) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("captioner_params: " + what); };
  if (p.beam_size < 0 || p.beam_size > 64) bad("beam_size must be 0 (the model's) to 64");
  if (p.max_length < 0 || p.max_length > 100) bad("max_length must be 0 (the model's) to 100");
  if (!(p.length_penalty <= 10)) bad("length_penalty must be at most 10 (< 0: the model's)");
  if (!(p.tag_threshold <= 1)) bad("tag_threshold must be at most 1 (0: off, < 0: the model's)");
  if (p.threads < 0 || p.threads > 1024) bad("threads must be 0 (all usable cores) to 1024");
  if (p.batch_size < 0 || p.batch_size > 1024) bad("batch_size must be 0 (32) to 1024");
}

// The decoding fields of `params` as overrides of whatever decoding options they are applied to.
captioner::SearchOverrides search_overrides(const captioner_params& params) {
  captioner::SearchOverrides overrides;
  overrides.beam_size = params.beam_size;
  overrides.max_length = params.max_length;
  overrides.length_penalty = params.length_penalty;
  overrides.tag_threshold = params.tag_threshold;
  return overrides;
}

captioner_model* load(const char* model_dir, const captioner_params& params) {
  check_params(params);
  const std::filesystem::path dir = model_dir ? std::filesystem::path(model_dir) : captioner::default_model_dir();
  auto model = std::make_unique<captioner_model>();
  model->bundle = captioner::ModelBundle::load(dir, torch::kCPU);
  model->encoder.emplace(captioner::Encoder::load(model->bundle.encoder_file, torch::kCPU));
  captioner::CaptionPipelineOptions& options = model->options;
  options.search = search_overrides(params).applied_to(model->bundle.search);
  options.threads = captioner::ThreadPlan::choose(params.threads);
  if (params.batch_size > 0) options.batch_size = params.batch_size;
  model->pipeline.emplace(model->bundle, *model->encoder, options);
  captioner::CaptionServiceOptions service;
  service.max_batch = options.batch_size;
  service.encoder_batch = options.encoder_batch;
  service.threads = options.threads;
  service.image = options.image;
  // A folder call sets OpenBLAS's process-wide thread count as the service's decoder does: they take turns.
  service.exclusive = &model->pipeline_mutex;
  model->service.emplace(model->bundle, *model->encoder, service);
  return model.release();
}

captioner_result to_result(const captioner::PhotoResult& r) {
  captioner_result out{nullptr, 0, nullptr, nullptr};
  if (r.captioned) {
    out.caption = copy_string(r.captioned->caption);
    out.log_prob = r.captioned->log_prob;
    if (r.captioned->tag) out.tag = copy_string(r.captioned->tag->word);
  } else {
    out.error = copy_string(r.error);
  }
  return out;
}

// Captions photos (files, or bytes in memory named so) through the model's service, batched with
// other threads' calls; `params` NULL: the options the model was loaded with.
int caption_through_service(captioner_model* model, const std::vector<captioner::PhotoInput>& photos, captioner_result* results,
                            const captioner_params* params) {
  for (size_t i = 0; i < photos.size(); ++i) results[i] = captioner_result{nullptr, 0, nullptr, nullptr};
  captioner::SearchOptions search = model->options.search;
  if (params) {
    check_params(*params);
    search = search_overrides(*params).applied_to(search);
  }
  const auto done = model->service->caption(photos, search);
  int captioned = 0;
  for (size_t i = 0; i < done.size(); ++i) {
    results[i] = to_result(done[i]);
    captioned += results[i].caption != nullptr;
  }
  return captioned;
}

// A folder's worth of files, streamed through the pipeline in constant memory.
int caption_files_streamed(captioner_model* model, const std::vector<std::filesystem::path>& names, captioner_result* results) {
  for (size_t i = 0; i < names.size(); ++i) results[i] = captioner_result{nullptr, 0, nullptr, nullptr};
  std::lock_guard<std::mutex> lock(model->pipeline_mutex);
  int captioned = 0;
  captioner::CaptionCallbacks cb;
  cb.on_caption = [&](const captioner::CaptionedImage& c) {
    captioner_result& r = results[c.index];
    r.caption = copy_string(c.caption);
    r.log_prob = c.log_prob;
    if (c.tag) r.tag = copy_string(c.tag->word);
    ++captioned;
  };
  cb.on_failure = [&](size_t index, const captioner::ImageError& e) { results[index].error = copy_string(e.what()); };
  model->pipeline->run(names, cb);
  return captioned;
}

char* caption_one(captioner_model* model, const captioner::PhotoInput& photo) {
  captioner_result r{};
  caption_through_service(model, {photo}, &r, nullptr);
  if (!r.caption) set_error(r.error ? r.error : photo.name.string() + ": not captioned");
  char* text = r.caption;
  r.caption = nullptr;
  captioner_result_clear(&r);
  return text;
}

}  // namespace

extern "C" {

captioner_params captioner_default_params(void) { return captioner_params{0, 0, -1.0, -1.0, 0, 0}; }

captioner_model* captioner_load(const char* model_dir) { return captioner_load_with_params(model_dir, nullptr); }

captioner_model* captioner_load_with_params(const char* model_dir, const captioner_params* params) {
  return guarded([&] { return load(model_dir, params ? *params : captioner_default_params()); },
                 static_cast<captioner_model*>(nullptr));
}

char* captioner_caption_file(captioner_model* model, const char* path) {
  return guarded(
      [&]() -> char* {
        if (!model || !path) throw std::invalid_argument("captioner_caption_file: model and path must not be NULL");
        return caption_one(model, captioner::PhotoInput{path, std::nullopt});
      },
      static_cast<char*>(nullptr));
}

char* captioner_caption_bytes(captioner_model* model, const void* data, size_t size) {
  return guarded(
      [&]() -> char* {
        if (!model || !data) throw std::invalid_argument("captioner_caption_bytes: model and data must not be NULL");
        return caption_one(model,
                           captioner::PhotoInput{"(image in memory)", std::string_view(static_cast<const char*>(data), size)});
      },
      static_cast<char*>(nullptr));
}

int captioner_caption_files(captioner_model* model, const char* const* paths, size_t count, captioner_result* results) {
  return guarded(
      [&] {
        if (!model || (count > 0 && (!paths || !results))) {
          throw std::invalid_argument("captioner_caption_files: model, paths and results must not be NULL");
        }
        std::vector<std::filesystem::path> names;
        for (size_t i = 0; i < count; ++i) {
          if (!paths[i]) throw std::invalid_argument("captioner_caption_files: paths[" + std::to_string(i) + "] is NULL");
          names.emplace_back(paths[i]);
        }
        return caption_files_streamed(model, names, results);
      },
      -1);
}

int captioner_caption_images(captioner_model* model, const void* const* data, const size_t* sizes, size_t count,
                             captioner_result* results) {
  return captioner_caption_images_with(model, nullptr, data, sizes, count, results);
}

int captioner_caption_images_with(captioner_model* model, const captioner_params* params, const void* const* data,
                                  const size_t* sizes, size_t count, captioner_result* results) {
  return guarded(
      [&] {
        if (!model || (count > 0 && (!data || !sizes || !results))) {
          throw std::invalid_argument("captioner_caption_images: model, data, sizes and results must not be NULL");
        }
        std::vector<captioner::PhotoInput> photos;
        for (size_t i = 0; i < count; ++i) {
          if (!data[i]) throw std::invalid_argument("captioner_caption_images: data[" + std::to_string(i) + "] is NULL");
          photos.push_back(
              {"(image " + std::to_string(i) + " in memory)", std::string_view(static_cast<const char*>(data[i]), sizes[i])});
        }
        return caption_through_service(model, photos, results, params);
      },
      -1);
}

void captioner_result_clear(captioner_result* result) {
  if (!result) return;
  std::free(result->caption);
  std::free(result->tag);
  std::free(result->error);
  *result = captioner_result{nullptr, 0, nullptr, nullptr};
}

void captioner_free_string(char* text) { std::free(text); }

void captioner_free(captioner_model* model) { delete model; }

const char* captioner_last_error(void) { return g_last_error.c_str(); }

const char* captioner_version(void) { return "captioner " CAPTIONER_VERSION; }

}  // extern "C"
