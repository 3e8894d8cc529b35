// Everything `captioner train` does, as a library call: read caption files, build the vocabulary,
// encode (or load cached) image features, then run the Trainer. Tests call this directly.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "decoder/network/decoder_config.h"
#include "decoder/training/distributed.h"
#include "decoder/training/trainer_options.h"

namespace captioner {

struct TrainJob {
  std::filesystem::path train_captions;  // COCO JSON, Karpathy JSON or Flickr8k token file
  std::filesystem::path val_captions;
  std::filesystem::path train_images;  // folder the file names resolve against
  std::filesystem::path val_images;
  std::filesystem::path train_split;  // Flickr8k token file: list of the split's images
  std::filesystem::path val_split;
  std::string karpathy_train_split = "train";
  std::string karpathy_val_split = "val";
  std::filesystem::path encoder_file;  // empty: init_from's encoder, else the installation's default
  std::filesystem::path output_dir;
  bool overwrite = false;           // replace a model or run already in output_dir
  std::filesystem::path init_from;  // start from this model (its vocabulary and decoder), e.g. to fine-tune
  std::filesystem::path cache_dir;  // image features are cached here; empty: no cache
  // Captions whose photos are absent (e.g. Flickr30k's text): the decoder first learns language
  // from them with the image term off (v = 0) for text_epochs epochs, in <output_dir>/text_phase,
  // then trains on the photos from those weights. Words outside the vocabulary of the photos'
  // captions drop the caption. Empty: no text phase.
  std::filesystem::path text_captions;
  int text_epochs = 2;
  int min_word_count = 5;
  int max_caption_length = 30;  // words; longer training captions are cut
  size_t max_train_images = 0;  // 0: all (a first N for quick experiments)
  size_t max_val_images = 0;
  int loader_threads = 2;
  int threads = 0;        // LibTorch threads; 0: ThreadPlan::choose's split
  int encoder_batch = 4;  // MobileNetV2 ran ~3x faster per image at batch 4 than at 32 on 2 cores
  std::string device = "auto";
  // Training's matrix products in bf16 (decoder/kernels/bf16_matmul.h): "off", "on", or "auto" = on
  // where the CPU multiplies bf16 natively. Off by default: ~1.75x faster, but models trained
  // with it scored a little lower on held-out photos (docs/ablation.md).
  std::string bf16_products = "off";
  std::string command_line;  // recorded in the model bundle
  DecoderConfig decoder;     // vocab_size and feature_dim are filled in
  TrainerOptions trainer;
  SearchOptions search;  // decoding defaults written into the bundle
  // Several processes (torchrun's environment, or rank/world size/master given here): features
  // encoded in shards, then data-parallel training. A world of one is the plain path.
  DistributedOptions distributed;
};

struct TrainJobCallbacks {
  TrainerCallbacks trainer;
  std::function<void(const std::string& what, size_t done, size_t total)> on_features;
};

// Throws before any work when output_dir holds a model or run that the job may not replace.
void check_output_dir(const TrainJob& job);

TrainResult run_train_job(const TrainJob& job, const TrainJobCallbacks& callbacks = {});

}  // namespace captioner
