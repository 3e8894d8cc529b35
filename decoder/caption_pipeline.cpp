#include "decoder/caption_pipeline.h"

#include "encoder/image_batcher.h"

namespace captioner {

CaptionPipeline::CaptionPipeline(const ModelBundle& model, Encoder& encoder, CaptionPipelineOptions options)
    : model_(model), encoder_(encoder), options_(std::move(options)) {
  check_same_encoder(model_.encoder, encoder_.info(), "the model");
}

torch::Tensor CaptionPipeline::encode_in_chunks(const torch::Tensor& pixels) {
  const int64_t n = pixels.size(0), step = std::max(1, options_.encoder_batch);
  if (n <= step) return encoder_.encode(pixels);
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < n; s += step) parts.push_back(encoder_.encode(pixels.narrow(0, s, std::min(step, n - s))));
  return torch::cat(parts);
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
      FeatureViews views;
      {
        ScopedTorchThreads threads(options_.threads.encoder);
        views.push_back(encode_in_chunks(batch.pixels));
        if (bo.with_flipped) views.push_back(encode_in_chunks(batch.flipped));
      }
      std::vector<Caption> captions;
      {
        ScopedTorchThreads threads(options_.threads.decoder);
        captions = search_captions(*scorer, views, options_.search);
      }
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
