#include "decoder/training/distributed.h"

#include <glog/logging.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace captioner {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int env_int(const char* name, int fallback) {
  std::string v = env(name);
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    int n = std::stoi(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  throw std::runtime_error(std::string("environment variable ") + name + "=\"" + v + "\" is not a whole number");
}

// c10d and Gloo report with backtraces and several lines; the user needs the first one.
std::string first_line(const std::exception& e) {
  std::string m;
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) {
    m = c->what_without_backtrace();
  } else {
    m = e.what();
  }
  auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

}  // namespace

WorldPlace resolve_world(const DistributedOptions& o) {
  WorldPlace w;
  w.world_size = o.world_size >= 0 ? o.world_size : env_int("WORLD_SIZE", 1);
  w.rank = o.rank >= 0 ? o.rank : env_int("RANK", 0);
  if (w.world_size < 1) throw std::runtime_error("world size must be at least 1, not " + std::to_string(w.world_size));
  if (w.rank < 0 || w.rank >= w.world_size) {
    throw std::runtime_error("rank " + std::to_string(w.rank) + " is outside a world of " + std::to_string(w.world_size) +
                             " processes (ranks 0.." + std::to_string(w.world_size - 1) + ")");
  }
  return w;
}

struct DistributedGroup::Impl {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::chrono::seconds timeout;
  int rank = 0;
  int world = 1;
  double seconds = 0;

  // Runs one collective and waits for it; any failure becomes one line naming this rank, the
  // operation and the timeout.
  template <typename Launch>
  void run(const char* what, Launch launch) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      auto work = launch();
      work->wait(std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(rank) + " of " + std::to_string(world) + ": " + what +
                               " failed: another process died, stopped or did not answer within " +
                               std::to_string(timeout.count()) + " s (--dist-timeout): " + first_line(e));
    }
  }
};

DistributedGroup::DistributedGroup(std::unique_ptr<Impl> impl, int rank, int world_size)
    : impl_(std::move(impl)), rank_(rank), world_size_(world_size) {}

DistributedGroup::~DistributedGroup() = default;

int torchrun_restart_count() { return std::max(0, env_int("TORCHELASTIC_RESTART_COUNT", 0)); }

std::unique_ptr<DistributedGroup> DistributedGroup::connect(const DistributedOptions& o) {
  WorldPlace w = resolve_world(o);
  if (w.world_size == 1) return nullptr;
  std::string addr = !o.master_addr.empty() ? o.master_addr : env("MASTER_ADDR");
  if (addr.empty()) addr = "127.0.0.1";
  int port = o.master_port > 0 ? o.master_port : env_int("MASTER_PORT", c10d::TCPStoreOptions::kDefaultPort);
  if (port < 1 || port > 65535) throw std::runtime_error("master port " + std::to_string(port) + " is not a TCP port");
  const auto timeout_ms = std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout);
  const std::string where = addr + ":" + std::to_string(port);

  // c10d's TCPStore logs each failed bind through glog, four lines of "socket.cpp:426] [c10d]
  // ..." on stderr before it throws; the exception says the same, and becomes one line below.
  struct QuietGlog {
    int saved = FLAGS_minloglevel;
    QuietGlog() { FLAGS_minloglevel = google::GLOG_FATAL; }
    ~QuietGlog() { FLAGS_minloglevel = saved; }
  } quiet;
  auto impl = std::make_unique<Impl>();
  impl->timeout = o.timeout;
  impl->rank = w.rank;
  impl->world = w.world_size;
  try {
    // Under torchrun's agent the store already runs (every rank is a client, under a prefix per
    // restart); otherwise rank 0 hosts it, as torch.distributed.init_process_group does.
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.timeout = timeout_ms;
    c10::intrusive_ptr<c10d::Store> store;
    if (env("TORCHELASTIC_USE_AGENT_STORE") == "True") {
      so.isServer = false;
      store =
          c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(env_int("TORCHELASTIC_RESTART_COUNT", 0)),
                                                 c10::make_intrusive<c10d::TCPStore>(addr, so));
    } else {
      so.isServer = w.rank == 0;
      so.numWorkers = static_cast<size_t>(w.world_size);
      so.waitWorkers = true;
      store = c10::make_intrusive<c10d::TCPStore>(addr, so);
    }
    auto options = c10d::ProcessGroupGloo::Options::create(timeout_ms);
    // GLOO_SOCKET_IFNAME picks the network interface (as in PyTorch); on one machine loopback.
    std::string ifname = env("GLOO_SOCKET_IFNAME");
    if (!ifname.empty()) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (addr == "localhost" || addr.rfind("127.", 0) == 0) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 1;  // the work is small messages; the cores belong to the model
    impl->group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, w.rank, w.world_size, options);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (what.find("Address already in use") != std::string::npos) {
      throw std::runtime_error("rank " + std::to_string(w.rank) + " of " + std::to_string(w.world_size) + ": port " +
                               std::to_string(port) +
                               " is already in use on this machine (another run?): choose a free one with --master-port "
                               "or MASTER_PORT, the same for every rank");
    }
    throw std::runtime_error(
        "rank " + std::to_string(w.rank) + " of " + std::to_string(w.world_size) + ": could not join the others at " + where +
        " within " + std::to_string(o.timeout.count()) +
        " s (is every rank started, with the same MASTER_ADDR/MASTER_PORT? --dist-timeout): " + first_line(e));
  }
  return std::unique_ptr<DistributedGroup>(new DistributedGroup(std::move(impl), w.rank, w.world_size));
}

void DistributedGroup::allreduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  // Buckets hold tensors of one dtype in order; each is flattened into one buffer, reduced and
  // copied back.
  size_t i = 0;
  while (i < tensors.size()) {
    std::vector<at::Tensor> members;
    int64_t bytes = 0;
    const auto dtype = tensors[i].scalar_type();
    while (i < tensors.size() && tensors[i].scalar_type() == dtype && (members.empty() || bytes < bucket_bytes)) {
      members.push_back(tensors[i]);
      bytes += tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
      ++i;
    }
    std::vector<at::Tensor> flat;
    for (const auto& t : members) flat.push_back(t.reshape({-1}));
    std::vector<at::Tensor> buffer{torch::cat(flat)};
    impl_->run("allreduce", [&] { return impl_->group->allreduce(buffer); });
    int64_t offset = 0;
    for (const auto& t : members) {
      t.copy_(buffer[0].narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

void DistributedGroup::broadcast(const std::vector<at::Tensor>& tensors, int root) {
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> one{t.is_contiguous() ? t : t.contiguous()};
    impl_->run("broadcast", [&] { return impl_->group->broadcast(one, bo); });
    if (!t.is_contiguous()) {
      t.copy_(one[0]);
    } else {
      t.unsafeGetTensorImpl()->bump_version();  // Gloo wrote into it: the weights changed
    }
  }
}

std::string DistributedGroup::broadcast_bytes(const std::string& bytes, int root) {
  auto size = torch::tensor({static_cast<int64_t>(rank_ == root ? bytes.size() : 0)}, torch::kLong);
  broadcast({size}, root);
  auto buffer = torch::empty({size.item<int64_t>()}, torch::kUInt8);
  if (rank_ == root && !bytes.empty()) std::memcpy(buffer.data_ptr(), bytes.data(), bytes.size());
  broadcast({buffer}, root);
  return std::string(static_cast<const char*>(buffer.data_ptr()), static_cast<size_t>(buffer.numel()));
}

void DistributedGroup::check_same_settings(const std::vector<Setting>& settings) {
  nlohmann::json mine = nlohmann::json::array();
  for (const auto& [name, value] : settings) mine.push_back({name, value});
  const nlohmann::json first =
      nlohmann::json::parse(broadcast_bytes(mine.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  // The first setting where this rank differs from rank 0 (settings.size() + 1: none).
  const int64_t none = static_cast<int64_t>(settings.size()) + 1;
  int64_t differs = none;
  for (size_t i = 0; i < std::max(settings.size(), first.size()); ++i) {
    if (i >= settings.size() || i >= first.size() || first[i] != mine[i]) {
      differs = static_cast<int64_t>(i);
      break;
    }
  }
  // Smallest (setting, rank) over all ranks, so that every rank names the same difference.
  auto code = torch::tensor({differs * world_size_ + rank_}, torch::kLong);
  std::vector<at::Tensor> one{code};
  c10d::AllreduceOptions min;
  min.reduceOp = c10d::ReduceOp::MIN;
  impl_->run("comparing settings", [&] { return impl_->group->allreduce(one, min); });
  const int64_t found = code.item<int64_t>();
  if (found / world_size_ >= none) return;
  const size_t index = static_cast<size_t>(found / world_size_);
  const int other = static_cast<int>(found % world_size_);
  const std::string theirs = broadcast_bytes(index < settings.size() ? settings[index].second : "(not set)", other);
  const std::string name = index < first.size()      ? first[index][0].get<std::string>()
                           : index < settings.size() ? settings[index].first
                                                     : "the settings";
  const std::string ours = index < first.size() ? first[index][1].get<std::string>() : "(not set)";
  throw std::runtime_error("rank " + std::to_string(other) + " and rank 0 disagree on " + name + ": rank 0 has " + ours +
                           ", rank " + std::to_string(other) + " has " + theirs +
                           "; start every rank with the same options, data and encoder");
}

double DistributedGroup::communication_seconds() const { return impl_->seconds; }

}  // namespace captioner
