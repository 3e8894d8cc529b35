// Several processes as one (issue 12): data-parallel training over c10d/Gloo on 127.0.0.1 ends
// where one process with the whole batch ends; shards of a folder merge into the one-process
// output; a rank that dies makes the others fail within the timeout. Tiny model, no ../shared.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "datasets/caption_writer.h"
#include "datasets/file_io.h"
#include "decoder/bundle/model_bundle.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A TCP port nobody listens on now (the kernel's choice), for the rendezvous store.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    throw std::runtime_error("no free port");
  }
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

struct Fixture {
  TempDir tmp;
  fs::path encoder, data, captions;
  Fixture() {
    encoder = make_tiny_encoder(tmp / "encoders");
    // 48 photos of three colours, each captioned by its colour: a task the tiny model can learn.
    data = tmp / "data";
    fs::create_directories(data);
    const char* names[] = {"red", "green", "blue"};
    const cv::Scalar bgr[] = {{0, 0, 255}, {0, 255, 0}, {255, 0, 0}};
    nlohmann::json coco{{"images", nlohmann::json::array()}, {"annotations", nlohmann::json::array()}};
    std::mt19937 rng(7);
    for (int i = 1; i <= 48; ++i) {
      int c = i % 3;
      cv::Mat img(16 + static_cast<int>(rng() % 8), 20, CV_8UC3, bgr[c] * (0.6 + 0.4 * (rng() % 100) / 100.0));
      std::string name = std::to_string(i) + ".jpg";
      cv::imwrite((data / name).string(), img);
      coco["images"].push_back({{"id", i}, {"file_name", name}});
      coco["annotations"].push_back({{"image_id", i}, {"id", 2 * i}, {"caption", std::string("a ") + names[c] + " photo"}});
      coco["annotations"].push_back(
          {{"image_id", i}, {"id", 2 * i + 1}, {"caption", std::string("the ") + names[c] + " thing here"}});
    }
    captions = data / "captions.json";
    write_text(captions, coco.dump());
  }
  std::string train_command(const fs::path& out, const std::string& extra) const {
    return "timeout 300 '" + std::string(CAPTIONER_BINARY) + "' train --train-captions " + captions.string() +
           " --val-captions " + captions.string() + " --train-images " + data.string() + " --encoder " + encoder.string() +
           " --min-word-count 1 --hidden 32 --embed 16 --dropout 0.3 --flip-augment -q --cache-dir " + (tmp / "cache").string() +
           " --output-dir " + out.string() + " " + extra;
  }
};

void expect_same_weights(const fs::path& a, const fs::path& b, double tolerance) {
  auto ma = ModelBundle::load(a), mb = ModelBundle::load(b);
  auto pa = ma.members.at(0).decoder->named_parameters(), pb = mb.members.at(0).decoder->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    double diff = (pa[i].value() - pb[i].value()).abs().max().item<double>();
    EXPECT_LE(diff, tolerance) << pa[i].key();
  }
}

}  // namespace

TEST(Distributed, TwoProcessesTrainLikeOneProcessWithTheWholeBatch) {
  Fixture f;
  // One process, global batch 16; then two processes of 8 each. Dropout, flips and shuffling are
  // drawn for the global batch, so both runs see the same numbers.
  const std::string opts = "--epochs 3 --batch-captions 16 --seed 5 --checkpoint-every 2";
  auto one = run_shell(f.train_command(f.tmp / "one", opts));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const int port = free_port();
  const std::string dist = " --world-size 2 --master-port " + std::to_string(port) + " --dist-timeout 60";
  auto two =
      run_shell("(" + f.train_command(f.tmp / "two", opts + dist + " --rank 1") + " 2>" + (f.tmp / "rank1.err").string() + " & " +
                f.train_command(f.tmp / "two", opts + dist + " --rank 0") + "; r=$?; wait $! || exit 99; exit $r)");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_NE(two.err.find("data-parallel over 2 processes"), std::string::npos) << two.err;
  // Float sums in another order (two half-batch products, then an allreduce) differ in the last
  // bits; 3 epochs of Adam keep that far below any difference training makes.
  expect_same_weights(f.tmp / "one", f.tmp / "two", 2e-4);
  // The log agrees too: same epochs, same validation scores, same choice of best epoch.
  auto last_line = [](const fs::path& metrics) {
    std::istringstream in(read_file(metrics));
    std::string line, last;
    while (std::getline(in, line)) last = line;
    return nlohmann::json::parse(last);
  };
  auto a = last_line(f.tmp / "one" / "metrics.jsonl"), b = last_line(f.tmp / "two" / "metrics.jsonl");
  EXPECT_EQ(a["best_epoch"], b["best_epoch"]);
  EXPECT_NEAR(a["train_loss"].get<double>(), b["train_loss"].get<double>(), 1e-4);
}

// torchrun --max-restarts 1: rank 1 dies as kill -9 would in the middle of epoch 2; torchrun
// restarts the group, which resumes from the last checkpoint and ends with the weights of a
// torchrun run nobody killed.
TEST(Distributed, TorchrunRestartsAKilledRankAndTheRunResumesFromItsCheckpoint) {
  if (!fs::exists("/usr/bin/torchrun")) GTEST_SKIP() << "torchrun not installed (Debian: python3-torch)";
  Fixture f;
  // 96 captions in global batches of 16: 6 steps an epoch, a checkpoint every 2.
  const std::string opts = "--epochs 3 --batch-captions 16 --seed 5 --checkpoint-every 2 --dist-timeout 60";
  auto torchrun = [&](const std::string& name, int die_after_steps) {
    const fs::path script = f.tmp / (name + ".sh");
    write_text(script, "#!/bin/sh\nif [ \"$RANK\" = 1 ] && [ \"$TORCHELASTIC_RESTART_COUNT\" = 0 ] && [ " +
                           std::to_string(die_after_steps) + " -gt 0 ]; then export CAPTIONER_TEST_DIE_AFTER_STEPS=" +
                           std::to_string(die_after_steps) + "; fi\nexec " + f.train_command(f.tmp / name, opts) + "\n");
    return run_shell("cd " + f.tmp.path().string() +
                     " && timeout 600 torchrun --standalone --nproc_per_node 2 --max_restarts 1 " +
                     "--monitor_interval 1 --redirects 1 --tee 1 --no_python sh " + script.string());
  };
  auto straight = torchrun("straight", 0);
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  auto restarted = torchrun("restarted", 9);
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  EXPECT_NE(restarted.err.find("torchrun restart 1: resuming from the last checkpoint"), std::string::npos) << restarted.err;
  EXPECT_NE(restarted.err.find("resuming from"), std::string::npos) << restarted.err;
  expect_same_weights(f.tmp / "straight", f.tmp / "restarted", 0.0);
}

namespace {
// Two network namespaces joined by a veth pair, 10.213.0.1 and .2, made for one test and removed
// with it: two machines as far as the ranks can tell. Needs root (CAP_NET_ADMIN) and iproute2.
class TwoMachines {
 public:
  TwoMachines() : tag_(std::to_string(::getpid() % 100000)) {
    ok_ = ::geteuid() == 0 && run_shell("ip netns add " + ns(0)).exit_code == 0;
    if (!ok_) return;
    ok_ = run_shell("ip netns add " + ns(1) + " && ip link add " + dev(0) + " type veth peer name " + dev(1) +
                    " && ip link set " + dev(0) + " netns " + ns(0) + " && ip link set " + dev(1) + " netns " + ns(1) + " && " +
                    "ip -n " + ns(0) + " addr add " + addr(0) + "/24 dev " + dev(0) + " && ip -n " + ns(1) + " addr add " +
                    addr(1) + "/24 dev " + dev(1) + " && ip -n " + ns(0) + " link set " + dev(0) + " up && ip -n " + ns(1) +
                    " link set " + dev(1) + " up && ip -n " + ns(0) + " link set lo up && ip -n " + ns(1) + " link set lo up")
              .exit_code == 0;
  }
  ~TwoMachines() { run_shell("ip netns del " + ns(0) + " 2>/dev/null; ip netns del " + ns(1) + " 2>/dev/null"); }
  bool ok() const { return ok_; }
  std::string ns(int i) const { return "captioner" + tag_ + (i ? "b" : "a"); }
  std::string dev(int i) const { return "cv" + tag_ + (i ? "b" : "a"); }
  std::string addr(int i) const { return i ? "10.213.0.2" : "10.213.0.1"; }
  // A shell prefix that runs the rest of the command on machine i, Gloo on its veth end.
  std::string in(int i) const { return "ip netns exec " + ns(i) + " env GLOO_SOCKET_IFNAME=" + dev(i) + " "; }

 private:
  std::string tag_;
  bool ok_ = false;
};
}  // namespace

// The multi-machine path as it is used: each rank in its own network namespace with its own
// address, the store on rank 0's address, Gloo on the interface GLOO_SOCKET_IFNAME names. The
// model equals the one-process model, as on loopback.
TEST(Distributed, TwoRanksOnTwoNetworkNamespacesTrainLikeOneProcess) {
  TwoMachines machines;
  if (!machines.ok()) GTEST_SKIP() << "needs root and iproute2 to make two network namespaces (ip netns add)";
  Fixture f;
  const std::string opts = "--epochs 2 --batch-captions 16 --seed 5";
  auto one = run_shell(f.train_command(f.tmp / "one", opts));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const std::string dist = opts + " --world-size 2 --master-addr " + machines.addr(0) + " --master-port " +
                           std::to_string(free_port()) + " --dist-timeout 60";
  auto two = run_shell("(" + machines.in(1) + f.train_command(f.tmp / "two", dist + " --rank 1") + " 2>" +
                       (f.tmp / "rank1.err").string() + " & " + machines.in(0) +
                       f.train_command(f.tmp / "two", dist + " --rank 0") + "; r=$?; wait $! || exit 99; exit $r)");
  ASSERT_EQ(two.exit_code, 0) << two.err << read_file(f.tmp / "rank1.err");
  EXPECT_NE(two.err.find("data-parallel over 2 processes"), std::string::npos) << two.err;
  expect_same_weights(f.tmp / "one", f.tmp / "two", 2e-4);
}

TEST(Distributed, ShardedFeaturesEqualOneProcessFeatures) {
  Fixture f;
  const int port = free_port();
  const std::string dist =
      " --epochs 1 --batch-captions 16 --world-size 2 --master-port " + std::to_string(port) + " --dist-timeout 60";
  auto two = run_shell("(" + f.train_command(f.tmp / "two", dist + " --rank 1") + " 2>/dev/null & " +
                       f.train_command(f.tmp / "two", dist + " --rank 0") + "; r=$?; wait $! || exit 99; exit $r)");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  std::map<std::string, std::string> sharded;
  for (const auto& e : fs::directory_iterator(f.tmp / "cache")) sharded[e.path().filename().string()] = read_file(e.path());
  fs::remove_all(f.tmp / "cache");
  auto one = run_shell(f.train_command(f.tmp / "one", "--epochs 1 --batch-captions 16"));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  std::map<std::string, std::string> single;
  for (const auto& e : fs::directory_iterator(f.tmp / "cache")) single[e.path().filename().string()] = read_file(e.path());
  ASSERT_EQ(single.size(), 2u);
  EXPECT_TRUE(single == sharded) << "the cache files differ";
}

TEST(Distributed, ARankThatDiesStopsTheOthersWithinTheTimeout) {
  Fixture f;
  const int port = free_port();
  // Rank 1 dies as kill -9 would, after its third step (CAPTIONER_TEST_DIE_AFTER_STEPS, read only
  // by the trainer for tests like this); rank 0 must not wait for it forever.
  const std::string dist = " --epochs 50 --patience 50 --batch-captions 16 --world-size 2 --master-port " + std::to_string(port) +
                           " --dist-timeout 30";
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_shell("(CAPTIONER_TEST_DIE_AFTER_STEPS=3 " + f.train_command(f.tmp / "run", dist + " --rank 1") +
                     " 2>/dev/null & " + f.train_command(f.tmp / "run", dist + " --rank 0") + "; r=$?; wait; exit $r)");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "rank 0 hung until the test's own timeout";
  EXPECT_LT(seconds, 120);
  EXPECT_NE(r.err.find("rank 0 of 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("another process died"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("frame #"), std::string::npos) << "a one-line error, not a LibTorch trace:\n" << r.err;
}

TEST(Distributed, AStartWithoutThePeersFailsWithinTheTimeout) {
  Fixture f;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_shell(f.train_command(
      f.tmp / "run", "--epochs 1 --world-size 2 --rank 0 --master-port " + std::to_string(free_port()) + " --dist-timeout 3"));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(seconds, 60);
  EXPECT_NE(r.err.find("rank 0 of 2"), std::string::npos) << r.err;
}

// A port another program holds: one line naming it and what to do, exit 3, none of c10d's glog
// lines ("socket.cpp:426] [c10d] The server socket has failed to bind ...").
TEST(Distributed, APortInUseIsOneLineNamingIt) {
  Fixture f;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string port = std::to_string(ntohs(a.sin_port));
  auto r =
      run_shell(f.train_command(f.tmp / "run", "--epochs 1 --world-size 2 --rank 0 --master-port " + port + " --dist-timeout 5"));
  ::close(fd);
  expect_one_line_error(r, 3, {"port " + port + " is already in use", "--master-port"});
}

TEST(Distributed, ThreeShardsMergeIntoTheOneProcessOutput) {
  Fixture f;
  auto model = make_bundle(f.encoder, make_vocab({"a", "red", "green", "blue", "photo"}));
  model.save(f.tmp / "model");
  const std::string common = " caption " + f.data.string() + " --model " + (f.tmp / "model").string() + " -q";
  ASSERT_EQ(run_cli(common + " -o " + (f.tmp / "one.json").string()).exit_code, 0);
  std::string parts;
  for (int k = 0; k < 3; ++k) {
    auto r = run_cli(common + " --shard " + std::to_string(k) + "/3 -o " + (f.tmp / "out.json").string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    parts += " " + (f.tmp / ("out.part-" + std::to_string(k) + "-of-3.json")).string();
  }
  // A missing part is refused by name.
  auto missing = run_cli("merge " + (f.tmp / "out.part-0-of-3.json").string() + " -o " + (f.tmp / "bad.json").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("part 1 of 3 is missing"), std::string::npos) << missing.err;
  auto merged = run_cli("merge" + parts + " -o " + (f.tmp / "merged.json").string());
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  auto a = read_caption_file(f.tmp / "one.json"), b = read_caption_file(f.tmp / "merged.json");
  ASSERT_EQ(a.size(), 48u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].file_name, b[i].file_name);
    EXPECT_EQ(a[i].caption, b[i].caption);
    EXPECT_EQ(a[i].image_id, b[i].image_id);
  }
  // A file that is not a part of this run (no manifest beside it) is refused by name.
  auto twice = run_cli("merge" + parts + " " + (f.tmp / "one.json").string() + " -o " + (f.tmp / "bad.json").string());
  EXPECT_NE(twice.exit_code, 0);
  EXPECT_NE(twice.err.find("one.json has no one.json.manifest beside it"), std::string::npos) << twice.err;
}

// Issue 27 E: merge trusts nothing. A part whose run was killed, a row deleted or repeated, a
// part of another run, an unrelated JSON list: each refused in one line naming the part.
TEST(Distributed, MergeRefusesAnythingButEveryPhotoOnce) {
  Fixture f;
  make_bundle(f.encoder, make_vocab({"a", "red", "green", "blue", "photo"})).save(f.tmp / "model");
  const std::string common = " caption " + f.data.string() + " --model " + (f.tmp / "model").string() + " -q";
  const fs::path part0 = f.tmp / "out.part-0-of-2.json", part1 = f.tmp / "out.part-1-of-2.json";
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(run_cli(common + " --shard " + std::to_string(k) + "/2 -o " + (f.tmp / "out.json").string()).exit_code, 0);
  }
  const std::string good_part0 = read_file(part0), good_manifest0 = read_file(part0.string() + ".manifest");
  auto merge = [&](const std::string& parts) { return run_cli("merge " + parts + " -o " + (f.tmp / "merged.json").string()); };
  auto expect_refused = [&](const std::string& why, const std::string& fragment) {
    auto r = merge(part0.string() + " " + part1.string());
    EXPECT_EQ(r.exit_code, 3) << why << ": " << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << why << ": " << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << why << ": one line, not " << r.err;
    EXPECT_FALSE(fs::exists(f.tmp / "merged.json")) << why;
    write_text(part0, good_part0);
    write_text(part0.string() + ".manifest", good_manifest0);
  };
  // A run killed before it finished leaves its manifest unfinished.
  json m = json::parse(good_manifest0);
  m["finished"] = false;
  write_text(part0.string() + ".manifest", m.dump());
  expect_refused("killed part", "out.part-0-of-2.json is unfinished");
  // A row deleted, then a row repeated.
  json rows = json::parse(good_part0);
  const json first = rows[0];
  rows.erase(rows.begin());
  write_text(part0, rows.dump());
  expect_refused("deleted row", "lacks the caption of");
  rows = json::parse(good_part0);
  rows.push_back(first);
  write_text(part0, rows.dump());
  expect_refused("repeated row", "twice");
  // A row for a photo that is another part's.
  rows = json::parse(good_part0);
  rows.push_back(json::parse(read_file(part1))[0]);
  write_text(part0, rows.dump());
  expect_refused("another part's photo", "which is not one of its photos");
  // A part of another run (another folder) with the same name pattern.
  fs::create_directories(f.tmp / "other");
  fs::copy(f.data, f.tmp / "other" / "photos");
  fs::remove(*fs::directory_iterator(f.tmp / "other" / "photos"));
  ASSERT_EQ(run_cli(" caption " + (f.tmp / "other" / "photos").string() + " --model " + (f.tmp / "model").string() +
                    " -q --shard 1/2 -o " + (f.tmp / "other" / "out.json").string())
                .exit_code,
            0);
  auto r = merge(part0.string() + " " + (f.tmp / "other" / "out.part-1-of-2.json").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("of another run"), std::string::npos) << r.err;
  // The same part twice, and a part alone.
  r = merge(part0.string() + " " + part0.string());
  EXPECT_NE(r.err.find("part 0 is given twice"), std::string::npos) << r.err;
  r = merge(part1.string());
  EXPECT_NE(r.err.find("part 0 of 2 is missing"), std::string::npos) << r.err;
  // Untouched, they merge.
  r = merge(part0.string() + " " + part1.string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Distributed, ASignalOnOneRankStopsAllWithACheckpoint) {
  Fixture f;
  const int port = free_port();
  const fs::path out = f.tmp / "run";
  const std::string dist = " --epochs 500 --patience 500 --batch-captions 16 --world-size 2 --master-port " +
                           std::to_string(port) + " --dist-timeout 60";
  // SIGTERM (Ctrl-C works alike) to rank 1 only, once the run has written its first checkpoint.
  auto r = run_shell("(" + f.train_command(out, dist + " --rank 1") + " & p1=$!; " + f.train_command(out, dist + " --rank 0") +
                     " & p0=$!; for i in $(seq 600); do [ -f " + (out / "checkpoint.pt").string() +
                     " ] && break; sleep 0.1; done; sleep 0.5; kill -TERM $p1; wait $p0; r0=$?; wait $p1; r1=$?; echo $r0 $r1)");
  EXPECT_EQ(r.out, "130 130\n") << r.err;
  EXPECT_NE(r.err.find("interrupted: checkpoint saved"), std::string::npos) << r.err;
  std::ifstream in(out / "metrics.jsonl");
  EXPECT_TRUE(in.good());
  // And the run continues from that checkpoint, on two processes again.
  const std::string more = " --epochs 2 --resume --batch-captions 16 --world-size 2 --master-port " +
                           std::to_string(free_port()) + " --dist-timeout 60";
  auto resumed = run_shell("(" + f.train_command(out, more + " --rank 1") + " 2>/dev/null & " +
                           f.train_command(out, more + " --rank 0") + "; r=$?; wait $! || exit 99; exit $r)");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming from"), std::string::npos) << resumed.err;
}

// Issue 27 D: ranks started with other options or other data must not train (silently another
// model) nor die inside Gloo on mismatched sizes: every rank stops with one line naming the first
// setting that differs and both values.
TEST(Distributed, RanksThatDisagreeStopWithOneLineNamingTheSetting) {
  Fixture f;
  // The same captions in another order: what a shuffled copy on another machine looks like.
  nlohmann::json coco = nlohmann::json::parse(read_file(f.captions));
  std::reverse(coco["annotations"].begin(), coco["annotations"].end());
  const fs::path shuffled = f.tmp / "data" / "shuffled.json";
  write_text(shuffled, coco.dump());
  struct Case {
    std::string rank0_args, rank1_args, setting, rank0_value, rank1_value;
  };
  std::string rank1_train = f.train_command(f.tmp / "run", "");
  const std::string captions_arg = "--train-captions " + f.captions.string();
  rank1_train.replace(rank1_train.find(captions_arg), captions_arg.size(), "--train-captions " + shuffled.string());
  for (const Case& c :
       {Case{"--lr 0.001", "--lr 0.01", "--lr", "0.001", "0.01"}, Case{"--seed 5", "--seed 9", "--seed", "5", "9"},
        Case{"--cell lstm", "--cell gru", "--cell", "lstm", "gru"},
        Case{"", "SHUFFLED", "the training captions", "48 photos", "48 photos"}}) {
    const int port = free_port();
    const std::string common =
        " --epochs 1 --batch-captions 16 --world-size 2 --master-port " + std::to_string(port) + " --dist-timeout 30";
    const std::string rank1 = c.rank1_args == "SHUFFLED" ? rank1_train + common + " --rank 1"
                                                         : f.train_command(f.tmp / "run", c.rank1_args + common + " --rank 1");
    auto r = run_shell("(" + rank1 + " 2>" + (f.tmp / "rank1.err").string() + " & " +
                       f.train_command(f.tmp / "run", c.rank0_args + common + " --rank 0") +
                       "; r=$?; wait $!; r1=$?; exit $(( r * 10 + r1 )))");
    const std::string rank1_err = read_file(f.tmp / "rank1.err");
    EXPECT_EQ(r.exit_code, 33) << c.setting << ": both ranks must exit 3\n" << r.err << rank1_err;
    for (const std::string& err : {r.err, rank1_err}) {
      EXPECT_NE(err.find("rank 1 and rank 0 disagree on " + c.setting), std::string::npos) << err;
      EXPECT_NE(err.find("rank 0 has " + c.rank0_value), std::string::npos) << err;
      EXPECT_NE(err.find("rank 1 has " + c.rank1_value), std::string::npos) << err;
      EXPECT_EQ(err.find("EnforceNotMet"), std::string::npos) << err;
      EXPECT_EQ(err.find("frame #"), std::string::npos) << err;
    }
    EXPECT_FALSE(fs::exists(f.tmp / "run" / "decoder.pt")) << c.setting;
    fs::remove_all(f.tmp / "run");
  }
}
