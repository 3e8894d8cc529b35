// A pretrained CNN with its classifier removed, loaded from TorchScript: images in, one feature
// vector per image out. Its EncoderInfo (sidecar) says how images must be preprocessed for it.
#pragma once

#include <torch/script.h>

#include <filesystem>
#include <memory>
#include <string>

#include "encoder/encoder_info.h"

namespace captioner {

// "cuda" when LibTorch sees a GPU, else "cpu"; resolves "auto".
torch::Device resolve_device(const std::string& name);

class Encoder {
 public:
  // Loads <model_file> and its sidecar <model_file>.json and runs optimize_for_inference on the
  // loaded module (a module saved after optimising does not reload, so it is done here).
  static Encoder load(const std::filesystem::path& model_file, torch::Device device = torch::kCPU);

  const EncoderInfo& info() const { return info_; }
  torch::Device device() const { return device_; }

  // images: (N, 3, H, W) float32 preprocessed per info().spec, or uint8 planes (ImageLoader's
  // resize_to_planes) that are normalised here -> (N, D) float32 on the CPU.
  torch::Tensor encode(const torch::Tensor& images);
  // The same, `batch` images per call: MobileNetV2 ran ~3x faster per image at batch 4 than at 32
  // on 2 cores (its activations stay in cache); uint8 planes become floats a call's worth at a time.
  torch::Tensor encode_in_batches(const torch::Tensor& images, int64_t batch);

 private:
  struct Int8Instances;

  Encoder(std::shared_ptr<torch::jit::Module> module, EncoderInfo info, torch::Device device)
      : module_(std::move(module)), info_(std::move(info)), device_(device) {}
  // Shared, so a copy evicted by another thread outlives a forward still running on it.
  std::shared_ptr<torch::jit::Module> module_for(int64_t batch);

  std::shared_ptr<torch::jit::Module> module_;
  // int8 on CPU: one loaded copy per (threads, batch) shape, see module_for.
  std::shared_ptr<Int8Instances> int8_;
  EncoderInfo info_;
  torch::Device device_;
};

}  // namespace captioner
