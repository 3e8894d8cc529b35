#include "encoder/encoder.h"

#include "datasets/file_io.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/torch.h>

#include <algorithm>
#include <list>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <utility>

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

// oneDNN's quantized convolutions pack their weights for the first (intra-op threads, batch)
// shape a loaded module runs at. On AVX-512 CPUs another shape may then need a weight reorder
// oneDNN does not implement ("could not create a primitive descriptor for a reorder primitive"),
// while a fresh copy runs any one shape repeatedly. So each shape gets its own copy, loaded from
// the file's bytes; a run uses two or three shapes (its batch, a last partial batch).
struct Encoder::Int8Instances {
  std::string bytes;                          // the TorchScript file
  std::shared_ptr<torch::jit::Module> fresh;  // the copy Encoder::load made, not yet run
  std::mutex mutex;
  std::map<std::pair<int, int64_t>, std::shared_ptr<torch::jit::Module>> by_shape;
  std::list<std::pair<int, int64_t>> order;  // oldest first, for eviction
  static constexpr size_t kMaxCopies = 6;    // ~8 MB each
};

std::shared_ptr<torch::jit::Module> Encoder::module_for(int64_t batch) {
  if (!int8_) return module_;
  const std::pair<int, int64_t> shape{at::get_num_threads(), batch};
  std::lock_guard<std::mutex> lock(int8_->mutex);
  auto it = int8_->by_shape.find(shape);
  if (it != int8_->by_shape.end()) return it->second;
  if (int8_->by_shape.size() >= Int8Instances::kMaxCopies) {
    int8_->by_shape.erase(int8_->order.front());
    int8_->order.pop_front();
  }
  std::shared_ptr<torch::jit::Module> module = std::move(int8_->fresh);
  if (!module) {
    std::istringstream in(int8_->bytes);
    module = std::make_shared<torch::jit::Module>(torch::jit::load(in, device_));
    module->eval();
  }
  int8_->order.push_back(shape);
  int8_->by_shape[shape] = module;
  return module;
}

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
  if (int8 && device.is_cpu()) {
    enc.int8_ = std::make_shared<Int8Instances>();
    enc.int8_->bytes = read_file(model_file);
    enc.int8_->fresh = enc.module_;
  }
  return enc;
}

namespace {

// uint8 planes (N, 3, H, W) -> the float32 tensor the network reads, per `spec`.
torch::Tensor normalised(const torch::Tensor& planes, const PreprocessSpec& spec) {
  if (planes.dim() != 4 || planes.size(1) != 3 || planes.size(2) != spec.input_height || planes.size(3) != spec.input_width) {
    throw std::invalid_argument("encoder: pixels of shape " + c10::str(planes.sizes()) + ", expected (N, 3, " +
                                std::to_string(spec.input_height) + ", " + std::to_string(spec.input_width) + ")");
  }
  const torch::Tensor in = planes.cpu().contiguous();
  torch::Tensor out = torch::empty(in.sizes(), torch::kFloat);
  spec.normalise(in.data_ptr<uint8_t>(), out.data_ptr<float>(), in.size(0));
  return out;
}

}  // namespace

torch::Tensor Encoder::encode(const torch::Tensor& images) {
  c10::InferenceMode guard;
  torch::Tensor out;
  const torch::Tensor input = images.scalar_type() == torch::kByte ? normalised(images, info_.spec) : images;
  try {
    out = module_for(input.size(0))->forward({input.to(device_)}).toTensor();
  } catch (const std::exception& e) {
    // The TorchScript interpreter's message carries a two-part traceback; its last line says what
    // went wrong.
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    std::string what = c10_error ? c10_error->what_without_backtrace() : e.what();
    while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
    const size_t nl = what.rfind('\n');
    throw std::runtime_error("encoder " + info_.model_file.string() + " failed on a batch of " + std::to_string(images.size(0)) +
                             ": " + (nl == std::string::npos ? what : what.substr(nl + 1)));
  }
  if (out.dim() == 4) out = out.flatten(1);  // networks that stop at (N, D, 1, 1)
  // Checked at every call rather than by a probe at load time: an int8 module packs its weights
  // for the first batch shape it sees, so a probe would cost a second module load (~0.2 s).
  if (out.dim() != 2 || out.size(1) != info_.feature_dim) {
    throw std::runtime_error("encoder " + info_.model_file.string() + " returns shape " + c10::str(out.sizes()) +
                             " but its sidecar says " + std::to_string(info_.feature_dim) + "-d features");
  }
  return out.to(torch::kCPU, torch::kFloat);
}

torch::Tensor Encoder::encode_in_batches(const torch::Tensor& images, int64_t batch) {
  const int64_t n = images.size(0);
  batch = std::max<int64_t>(1, batch);
  if (n <= batch) return encode(images);
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < n; s += batch) parts.push_back(encode(images.narrow(0, s, std::min(batch, n - s))));
  return torch::cat(parts);
}

}  // namespace captioner
