#include "decoder/training/run_directory.h"

#include <cstdint>
#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "decoder/training/distributed.h"

namespace captioner {

namespace fs = std::filesystem;

RunDirectory::RunDirectory(fs::path dir, DistributedGroup* group)
    : dir_(std::move(dir)), group_(group), writes_(!group || group->is_main()) {
  if (writes_) fs::create_directories(dir_);
}

void RunDirectory::save_checkpoint(const CheckpointParts& parts, const TrainingState& state, const std::string& fingerprint) {
  if (!writes_) return;
  torch::serialize::OutputArchive archive;
  const auto params = parts.decoder.named_parameters();
  for (const auto& p : params) archive.write("model." + p.key(), p.value().detach().to(torch::kCPU));
  for (size_t i = 0; i < parts.averaged.size(); ++i) archive.write("ema." + params[i].key(), parts.averaged[i].to(torch::kCPU));
  torch::serialize::OutputArchive optimizer;
  parts.optimizer.save(optimizer);
  archive.write("optimizer", optimizer);
  auto generator = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write("rng", generator.get_state());
  }
  archive.write("state", c10::IValue(training_state_to_json(state, fingerprint)));
  save_archive_atomic(archive, checkpoint_file());
}

bool RunDirectory::load_checkpoint(const CheckpointParts& parts, TrainingState& state, const std::string& fingerprint) {
  const fs::path file = checkpoint_file();
  // Data-parallel: rank 0's checkpoint, sent to all (the others' disks need not hold it).
  std::string bytes;
  if (writes_ && fs::exists(file)) bytes = read_file(file);
  if (group_) bytes = group_->broadcast_bytes(bytes);
  if (bytes.empty()) return false;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size());
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot read checkpoint " + file.string() + ": " + e.what_without_backtrace());
  }
  c10::IValue text;
  archive.read("state", text);
  std::string written_for;
  TrainingState loaded = training_state_from_json(text.toStringRef(), file.string(), &written_for);
  if (written_for != fingerprint) {
    throw std::runtime_error("checkpoint " + file.string() +
                             " was written for other data, vocabulary, model or training options; rerun with the "
                             "same arguments to resume, or without --resume (and another --output) to start over");
  }
  torch::NoGradGuard no_grad;
  const auto params = parts.decoder.named_parameters();
  for (const auto& p : params) {
    torch::Tensor t;
    archive.read("model." + p.key(), t);
    p.value().copy_(t.to(p.value().device()));
  }
  for (size_t i = 0; i < parts.averaged.size(); ++i) {
    torch::Tensor t;
    archive.read("ema." + params[i].key(), t);
    parts.averaged[i].copy_(t.to(parts.averaged[i].device()));
  }
  torch::serialize::InputArchive optimizer;
  archive.read("optimizer", optimizer);
  parts.optimizer.load(optimizer);  // Adam's moments and step counts, on the CPU
  const torch::Device device = params.front().value().device();
  if (device != torch::kCPU) {
    for (auto& entry : parts.optimizer.state()) {
      auto& adam = static_cast<torch::optim::AdamParamState&>(*entry.second);
      adam.exp_avg(adam.exp_avg().to(device));
      adam.exp_avg_sq(adam.exp_avg_sq().to(device));
    }
  }
  torch::Tensor rng;
  archive.read("rng", rng);
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(rng);
  state = std::move(loaded);
  return true;
}

void RunDirectory::start_log() {
  std::error_code ec;
  if (writes_) fs::remove(log_file(), ec);
}

void RunDirectory::log(const BatchLogLine& line) {
  if (writes_) append_line(log_file(), to_json(line).dump());
}

void RunDirectory::log(const EpochReport& report) {
  if (writes_) append_line(log_file(), to_json(report).dump());
}

void RunDirectory::truncate_log(int64_t step) {
  // Lines logged after the checkpoint will be logged again by the resumed run; a line torn by
  // the crash goes too.
  if (!writes_ || !fs::exists(log_file())) return;
  const TrainingLog old = read_training_log(log_file());
  std::string kept;
  size_t e = 0;
  // Keep the lines in their order: batch lines and epoch lines interleave by step.
  for (size_t b = 0; b <= old.batches.size(); ++b) {
    const int64_t next_batch_step = b < old.batches.size() ? old.batches[b].step : INT64_MAX;
    for (; e < old.epochs.size() && old.epochs[e].step < next_batch_step; ++e) {
      if (old.epochs[e].step <= step) kept += to_json(old.epochs[e]).dump() + "\n";
    }
    if (b < old.batches.size() && old.batches[b].step <= step) kept += to_json(old.batches[b]).dump() + "\n";
  }
  write_file_atomic(log_file(), kept);
}

void RunDirectory::save_model(const ModelBundle& model, bool fp16) {
  if (writes_) model.save(dir_, fp16);
}

}  // namespace captioner
