#include "decoder/caption_pipeline.h"

#include "encoder/image_batcher.h"

namespace captioner {

CaptionPipeline::CaptionPipeline(const ModelBundle& model, Encoder& encoder, CaptionPipelineOptions options)
    : model_(model), encoder_(encoder), options_(std::move(options)) {
  if (encoder_.info().fingerprint() != model_.encoder.fingerprint()) {
    throw std::invalid_argument("the encoder is not the one the model was trained with");
  }
}

size_t CaptionPipeline::run(const std::vector<std::filesystem::path>& files, const CaptionCallbacks& cb) {
  ImageBatcherOptions bo;
  bo.batch_size = options_.batch_size;
  bo.workers = options_.loader_threads;
  bo.prefetch = options_.prefetch;
  bo.with_flipped = model_.num_views() > 1;
  bo.thumbnail_size = options_.thumbnail_size;
  ImageBatcher batcher(files, ImageLoader(encoder_.info().spec, options_.image), bo);
  auto scorer = model_.make_scorer();
  size_t failed = 0, done = 0;
  ImageBatch batch;
  while (!(cb.should_stop && cb.should_stop()) && batcher.next(batch)) {
    for (size_t k = 0; k < batch.failures.size(); ++k) {
      ++failed;
      if (cb.on_failure) cb.on_failure(batch.failed_indices[k], batch.failures[k]);
    }
    if (!batch.indices.empty()) {
      FeatureViews views{encoder_.encode(batch.pixels)};
      if (bo.with_flipped) views.push_back(encoder_.encode(batch.flipped));
      auto captions = search_captions(*scorer, views, options_.search);
      for (size_t i = 0; i < captions.size(); ++i) {
        CaptionedImage out;
        out.index = batch.indices[i];
        out.file = files[out.index];
        out.caption = model_.vocab.decode(captions[i].tokens);
        out.log_prob = captions[i].log_prob;
        if (i < batch.thumbnails.size()) out.thumbnail_jpeg = std::move(batch.thumbnails[i]);
        if (cb.on_caption) cb.on_caption(out);
      }
    }
    done += batch.indices.size() + batch.failures.size();
    if (cb.on_progress) cb.on_progress(done, files.size());
  }
  return failed;
}

}  // namespace captioner
