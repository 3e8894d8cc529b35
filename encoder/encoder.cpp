#include "encoder/encoder.h"

#include "datasets/file_io.h"

#include <torch/csrc/jit/api/module.h>
#include <torch/torch.h>

#include <stdexcept>

namespace captioner {

torch::Device resolve_device(const std::string& name) {
  if (name == "auto" || name.empty()) return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      throw std::runtime_error("--device " + name + ": this LibTorch build sees no CUDA GPU (use --device cpu)");
    }
    return torch::Device(name);
  }
  throw std::runtime_error("unknown device \"" + name + "\" (expected cpu, cuda or auto)");
}

namespace {
// FNV-1a over every parameter's and buffer's name, shape and bytes: identifies the weights no
// matter how the file was zipped.
std::string weights_hash(const torch::jit::Module& module) {
  uint64_t h = fnv1a64("captioner-encoder-weights");
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    auto c = t.detach().to(torch::kCPU).contiguous();
    h = fnv1a64(name + c10::str(c.sizes()) + c10::toString(c.scalar_type()), h);
    h = fnv1a64(std::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size()), h);
  };
  for (const auto& p : module.named_parameters(true)) add(p.name, p.value);
  for (const auto& b : module.named_buffers(true)) add(b.name, b.value);
  return hex64(h);
}
}  // namespace

Encoder Encoder::load(const std::filesystem::path& model_file, torch::Device device) {
  EncoderInfo info = EncoderInfo::load_sidecar(model_file);
  auto module = std::make_shared<torch::jit::Module>();
  try {
    *module = torch::jit::load(model_file.string(), device);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load encoder " + model_file.string() + ": " + e.what_without_backtrace() +
                             " (is it a TorchScript file? re-create it with scripts/make_default_encoder.sh)");
  }
  module->eval();
  info.weights_hash = weights_hash(*module);  // before optimising: folding changes the tensors
  try {
    *module = torch::jit::optimize_for_inference(*module);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot optimise encoder " + model_file.string() + ": " + e.what_without_backtrace());
  }
  Encoder enc(std::move(module), std::move(info), device);
  // One tiny forward checks the output width against the sidecar now rather than mid-run.
  auto probe = enc.encode(torch::zeros({1, 3, enc.info_.spec.input_height, enc.info_.spec.input_width}));
  if (probe.dim() != 2 || probe.size(1) != enc.info_.feature_dim) {
    throw std::runtime_error("encoder " + model_file.string() + " returns shape " + c10::str(probe.sizes()) +
                             " but its sidecar says " + std::to_string(enc.info_.feature_dim) + "-d features");
  }
  return enc;
}

torch::Tensor Encoder::encode(const torch::Tensor& images) {
  c10::InferenceMode guard;
  auto out = module_->forward({images.to(device_)}).toTensor();
  if (out.dim() == 4) out = out.flatten(1);  // networks that stop at (N, D, 1, 1)
  return out.to(torch::kCPU, torch::kFloat);
}

}  // namespace captioner
