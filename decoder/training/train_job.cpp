#include "decoder/training/train_job.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "datasets/caption_dataset.h"
#include "datasets/file_io.h"
#include "datasets/tokenizer.h"
#include "decoder/kernels/bf16_matmul.h"
#include "decoder/bundle/install_paths.h"
#include "decoder/training/trainer.h"
#include "encoder/feature_cache.h"
#include "encoder/threading.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

CaptionDataset load_split(const fs::path& file, const fs::path& images, const fs::path& split_list,
                          const std::string& karpathy_split, size_t limit) {
  DatasetOptions o;
  o.image_dir = images;
  o.split_list = split_list;
  o.split = karpathy_split;
  CaptionDataset ds = load_caption_file(file, o);
  if (limit > 0 && ds.records.size() > limit) ds.records.resize(limit);
  if (ds.records.empty()) throw std::runtime_error(file.string() + ": no captioned images");
  return ds;
}

// Drops images that could not be read, reporting each.
void keep_readable(CaptionDataset& ds, FeatureSet& feats, const std::function<void(const std::string&)>& say) {
  for (const auto& f : feats.failures) {
    if (say) say("skipped unreadable image: " + f);
  }
  if (feats.failures.empty()) return;
  std::vector<CaptionRecord> records;
  for (int64_t row : feats.drop_unreadable()) records.push_back(std::move(ds.records[static_cast<size_t>(row)]));
  if (records.empty()) throw std::runtime_error(ds.source.string() + ": none of the images could be read");
  ds.records = std::move(records);
}

}  // namespace

// A folder that holds a model or another run is never replaced unless asked: `--output
// models/default` by mistake must not destroy the shipped model.
void check_output_dir(const TrainJob& job) {
  if (job.trainer.resume || job.overwrite) return;
  for (const char* name : {"config.json", "decoder.pt", "checkpoint.pt", "metrics.jsonl"}) {
    std::error_code ec;
    if (fs::exists(job.output_dir / name, ec)) {
      throw std::runtime_error("--output " + job.output_dir.string() + " already holds a model or run (" + name +
                               "): choose another folder, continue that run with --resume, or pass --overwrite to replace it");
    }
  }
}

namespace {

std::string text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A dataset as the ranks must share it: the same photos (by name, in order) with the same captions.
std::string dataset_text(const CaptionDataset& ds) {
  uint64_t h = fnv1a64(ds.format);
  for (const auto& r : ds.records) {
    h = fnv1a64(r.file_name + '\0', h);
    for (const auto& c : r.captions) h = fnv1a64(c + '\0', h);
  }
  return std::to_string(ds.records.size()) + " photos, " + std::to_string(ds.num_captions()) + " captions, content " + hex64(h);
}

// Everything that shapes the trained model, by the flag that sets it, for the ranks of a
// data-parallel run to compare before they exchange anything sized by it (issue 27 D). Paths are
// compared by what they hold, not by name: each machine may keep the data elsewhere.
std::vector<DistributedGroup::Setting> settings_that_shape_the_model(const TrainJob& job, const TrainerOptions& t,
                                                                     const CaptionDataset& train, const CaptionDataset& val,
                                                                     const EncoderInfo& encoder, int world_size) {
  const DecoderConfig& d = job.decoder;
  return {{"the number of processes", std::to_string(world_size)},
          {"the training captions (--train-captions, --train-split, --max-train-images)", dataset_text(train)},
          {"the validation captions (--val-captions, --val-split, --max-val-images)", dataset_text(val)},
          {"the encoder (--encoder)", encoder.name + " " + encoder.fingerprint() + " weights " + encoder.weights_hash},
          {"--init-from", job.init_from.empty() ? "(none)" : "a model"},
          {"--min-word-count", std::to_string(job.min_word_count)},
          {"--max-caption-length", std::to_string(job.max_caption_length)},
          {"--cell", d.cell},
          {"--embed", std::to_string(d.embed_dim)},
          {"--hidden", std::to_string(d.hidden_dim)},
          {"--image-dim", std::to_string(d.image_dim)},
          {"--layers", std::to_string(d.num_layers)},
          {"--dropout", text(d.dropout)},
          {"--no-image-dropout", d.image_dropout ? "false" : "true"},
          {"--image-injection", std::string(d.image_every_step ? "every-step" : "") + (d.image_init_state ? "+init" : "")},
          {"--epochs", std::to_string(t.epochs)},
          {"--batch", std::to_string(t.batch_size)},
          {"--lr", text(t.learning_rate)},
          {"--lr-decay", text(t.lr_decay)},
          {"--lr-decay-every", std::to_string(t.lr_decay_every)},
          {"--weight-decay", text(t.weight_decay)},
          {"--clip", text(t.grad_clip)},
          {"--label-smoothing", text(t.label_smoothing)},
          {"--ema", text(t.ema_decay)},
          {"--patience", std::to_string(t.patience)},
          {"--flip-augment", t.flip_augment ? "true" : "false"},
          {"--seed", std::to_string(t.seed)},
          {"--checkpoint-every", std::to_string(t.checkpoint_every)},
          {"--resume", t.resume ? "true" : "false"},
          {"--bf16-products (as resolved on this CPU)", t.bf16_products ? "on" : "off"}};
}

bool resolve_bf16_products(const std::string& request, const torch::Device& device) {
  if (request == "off") return false;
  if (request == "on") {
    if (!device.is_cpu()) throw std::invalid_argument("--bf16-products on: bf16 products are for CPU training");
    return true;
  }
  if (request == "auto") return device.is_cpu() && bf16_products_native();
  throw std::invalid_argument("--bf16-products: expected auto, on or off, got '" + request + "'");
}

}  // namespace

TrainResult run_train_job(const TrainJob& job, const TrainJobCallbacks& cb) {
  std::unique_ptr<DistributedGroup> group = DistributedGroup::connect(job.distributed);
  const bool main_rank = !group || group->is_main();
  // Rank 0 owns the output folder; the others learn its verdict rather than waiting for it
  // until the timeout.
  std::string refusal;
  std::optional<OutputLock> output_lock;  // held until the run ends: one run per folder
  if (main_rank) {
    try {
      std::error_code ec;
      if (job.output_dir.has_parent_path()) fs::create_directories(job.output_dir.parent_path(), ec);
      output_lock.emplace(job.output_dir);
      check_output_dir(job);
    } catch (const std::exception& e) {
      refusal = e.what();
    }
  }
  if (group) refusal = group->broadcast_bytes(refusal);
  if (!refusal.empty()) throw std::runtime_error(main_rank ? refusal : "rank 0 refused to start: " + refusal);
  auto say = cb.trainer.on_message;
  CaptionDataset train =
      load_split(job.train_captions, job.train_images, job.train_split, job.karpathy_train_split, job.max_train_images);
  CaptionDataset val = load_split(job.val_captions, job.val_images, job.val_split, job.karpathy_val_split, job.max_val_images);
  for (const auto* ds : {&train, &val}) {
    for (const auto& w : ds->warnings) {
      if (say) say("warning: " + w);
    }
  }

  torch::Device device = resolve_device(job.device);
  TrainerOptions to = job.trainer;
  to.bf16_products = resolve_bf16_products(job.bf16_products, device);
  ThreadPlan threads = ThreadPlan::choose(job.threads);
  // bf16 products run on oneDNN, whose threads are LibTorch's: give them every core (float32's
  // products run on OpenBLAS's own pool, beside a single LibTorch thread).
  if (to.bf16_products && job.threads == 0) threads.decoder = threads.encoder_alone;
  std::optional<ScopedTorchThreads> encoder_threads(std::in_place, threads.encoder_alone);
  // Fine-tuning: the starting model fixes the vocabulary and the decoder's shape, and can only
  // continue on the features it was trained on, so its encoder is the default, not the
  // installation's. Loaded (and refused) before any image is encoded.
  std::optional<ModelBundle> init;
  if (!job.init_from.empty()) {
    init = ModelBundle::load(job.init_from, device);
    if (init->members.size() != 1 || init->members[0].view != 0) {
      throw std::runtime_error("--init-from " + job.init_from.string() +
                               ": can only continue from a single model, not an ensemble");
    }
  }
  const fs::path encoder_file = !job.encoder_file.empty() ? job.encoder_file : init ? init->encoder_file : default_encoder_file();
  Encoder encoder = Encoder::load(encoder_file, device);
  // Before any collective sized by the data or the model: every rank must be asked the same.
  if (group) {
    group->check_same_settings(settings_that_shape_the_model(job, to, train, val, encoder.info(), group->world_size()));
  }
  FeatureCacheOptions fo;
  fo.cache_dir = job.cache_dir;
  fo.batch_size = job.encoder_batch;
  fo.workers = job.loader_threads;
  fo.with_flipped = job.trainer.flip_augment;
  if (group) {
    fo.shard_index = group->rank();
    fo.shard_count = group->world_size();
    fo.write_cache = main_rank;
    fo.sum = [&](const std::vector<torch::Tensor>& t) { group->allreduce_sum(t); };
  }
  fo.progress = [&](size_t done, size_t total) {
    if (cb.on_features) cb.on_features("train images", done, total);
  };
  FeatureSet train_feats = compute_features(encoder, train.image_paths(), fo);
  fo.with_flipped = false;
  fo.progress = [&](size_t done, size_t total) {
    if (cb.on_features) cb.on_features("validation images", done, total);
  };
  FeatureSet val_feats = compute_features(encoder, val.image_paths(), fo);
  encoder_threads.reset();
  ScopedTorchThreads decoder_threads(threads.decoder);
  for (const auto* feats : {&train_feats, &val_feats}) {
    for (const auto& w : feats->warnings) {
      if (say) say("warning: " + w);
    }
  }
  keep_readable(train, train_feats, say);
  keep_readable(val, val_feats, say);

  // Vocabulary from the training captions only; bracket tokens carry no meaning for a caption.
  TokenizerOptions topt;
  topt.keep_bracket_tokens = false;
  std::vector<std::vector<std::string>> tokenized;
  std::vector<int64_t> caption_image;
  for (size_t i = 0; i < train.records.size(); ++i) {
    for (const auto& c : train.records[i].captions) {
      auto tokens = tokenize_caption(c, topt);
      if (tokens.empty()) continue;
      if (static_cast<int>(tokens.size()) > job.max_caption_length) tokens.resize(job.max_caption_length);
      tokenized.push_back(std::move(tokens));
      caption_image.push_back(static_cast<int64_t>(i));
    }
  }
  ModelBundle model;
  if (init) {
    check_same_encoder(init->encoder, encoder.info(), "--init-from " + job.init_from.string());
    model.vocab = init->vocab;
    model.members.push_back(init->members[0]);
    model.members[0].decoder->train();
  } else {
    model.vocab = Vocabulary::build(tokenized, job.min_word_count);
    if (model.vocab.size() <= Vocabulary::kNumSpecial) {
      throw std::runtime_error("no word occurs " + std::to_string(job.min_word_count) +
                               " times in the training captions: lower --min-word-count or add data");
    }
    DecoderConfig dc = job.decoder;
    dc.vocab_size = static_cast<int64_t>(model.vocab.size());
    dc.feature_dim = encoder.info().feature_dim;
    torch::manual_seed(job.trainer.seed);
    BundleMember member;
    member.decoder = CaptionDecoder(dc);
    member.decoder->to(device);
    model.members.push_back(member);
  }
  model.encoder = encoder.info();
  model.encoder_file = encoder_file;
  model.search = job.search;

  TrainingData data;
  data.features = train_feats.features;
  data.flipped = train_feats.flipped;
  data.caption_image = std::move(caption_image);
  for (const auto& t : tokenized) data.captions.push_back(model.vocab.encode(t));
  ValidationData vdata;
  vdata.features = val_feats.features;
  for (const auto& r : val.records) vdata.references.push_back(r.captions);

  const auto& t = to;
  model.training = {
      {"command", job.command_line},
      {"train",
       {{"captions", job.train_captions.string()}, {"images", train.records.size()}, {"captions_used", data.captions.size()}}},
      {"validation", {{"captions", job.val_captions.string()}, {"images", val.records.size()}}},
      {"options",
       {{"epochs", t.epochs},
        {"batch_size", t.batch_size},
        {"learning_rate", t.learning_rate},
        {"lr_decay", t.lr_decay},
        {"lr_decay_every", t.lr_decay_every},
        {"weight_decay", t.weight_decay},
        {"grad_clip", t.grad_clip},
        {"label_smoothing", t.label_smoothing},
        {"ema_decay", t.ema_decay},
        {"patience", t.patience},
        {"flip_augment", t.flip_augment},
        {"bf16_products", t.bf16_products},
        {"seed", t.seed},
        {"min_word_count", job.min_word_count},
        {"max_caption_length", job.max_caption_length},
        {"objective", "xe"},
        {"init_from", job.init_from.string()}}}};
  if (say && group) {
    say("data-parallel over " + std::to_string(group->world_size()) + " processes: each takes " +
        std::to_string(job.trainer.batch_size / group->world_size()) + " of every " + std::to_string(job.trainer.batch_size) +
        " captions");
  }
  if (say) {
    say("training on " + std::to_string(data.captions.size()) + " captions of " + std::to_string(train.records.size()) +
        " images; validating on " + std::to_string(val.records.size()) + " images; vocabulary " +
        std::to_string(model.vocab.size()) + " words; " + (device.is_cuda() ? "GPU" : "CPU"));
  }
  to.group = group.get();
  Trainer trainer(std::move(model), std::move(data), std::move(vdata), to, job.output_dir);
  return trainer.run(cb.trainer);
}

}  // namespace captioner
