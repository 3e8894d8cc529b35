#include "encoder/encoder.h"

#include "datasets/file_io.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/torch.h>

#include <algorithm>
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
// matter how the file was zipped. A frozen or quantized module keeps its weights as graph
// constants and packed objects, not parameters: then the archive's records identify it, all but
// the debug records, which hold the path of the script that wrote them (the same converter run
// in another checkout must give the same identity).
std::string weights_hash(const torch::jit::Module& module, const std::filesystem::path& file) {
  if (module.named_parameters(true).size() == 0 && module.named_buffers(true).size() == 0) {
    caffe2::serialize::PyTorchStreamReader reader(file.string());
    auto records = reader.getAllRecords();
    std::sort(records.begin(), records.end());
    uint64_t h = fnv1a64("captioner-encoder-records");
    for (const auto& name : records) {
      if (name.size() >= 10 && name.compare(name.size() - 10, 10, ".debug_pkl") == 0) continue;
      if (name.rfind(".data/", 0) == 0) continue;  // writer's version and serialization id
      auto [data, size] = reader.getRecord(name);
      h = fnv1a64(name, h);
      h = fnv1a64(std::string_view(static_cast<const char*>(data.get()), size), h);
    }
    return hex64(h);
  }
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
  const bool int8 = info.precision == "int8";
  if (int8) {
    // Quantized weights are repacked for the engine at load time, so it is chosen first. oneDNN
    // is the x86 engine of this LibTorch (no FBGEMM; QNNPACK is ~8x slower here).
    const auto& engines = at::globalContext().supportedQEngines();
    if (std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) == engines.end()) {
      throw std::runtime_error("encoder " + model_file.string() +
                               " is int8, but this LibTorch has no oneDNN quantized engine; use the float encoder "
                               "(models/encoders/mobilenet_v2.pt) or a LibTorch built with oneDNN");
    }
    at::globalContext().setQEngine(at::QEngine::ONEDNN);
  }
  auto module = std::make_shared<torch::jit::Module>();
  try {
    *module = torch::jit::load(model_file.string(), device);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load encoder " + model_file.string() + ": " + e.what_without_backtrace() +
                             " (is it a TorchScript file? re-create it with scripts/make_default_encoder.sh)");
  }
  module->eval();
  info.weights_hash = weights_hash(*module, model_file);  // before optimising: folding changes the tensors
  try {
    // A quantized graph is saved frozen and has nothing left to fold.
    if (!int8) *module = torch::jit::optimize_for_inference(*module);
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
