// Training survives being killed: SIGINT/SIGTERM write a checkpoint and exit cleanly; a kill -9
// at chosen steps (mid-epoch, at an epoch's end, in the last epoch) leaves only complete files;
// --resume then finishes with exactly the weights of a run that was never interrupted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <thread>

#include "decoder/bundle/model_bundle.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {
// 90 photos of coloured squares with captions naming the colour.
fs::path make_dataset(const fs::path& dir) {
  const char* names[] = {"red", "green", "blue"};
  const cv::Scalar colors[] = {{0, 0, 255}, {0, 255, 0}, {255, 0, 0}};
  json coco{{"images", json::array()}, {"annotations", json::array()}};
  int ann = 1;
  for (int i = 0; i < 90; ++i) {
    std::string file = "img" + std::to_string(i) + ".png";
    cv::imwrite((dir / file).string(), cv::Mat(16, 16, CV_8UC3, colors[i % 3] * (0.5 + 0.5 * (i % 5) / 4.0)));
    coco["images"].push_back({{"id", i + 1}, {"file_name", file}});
    for (const char* tmpl : {"a %s square", "a bright %s square", "the square is %s"}) {
      char cap[64];
      std::snprintf(cap, sizeof cap, tmpl, names[i % 3]);
      coco["annotations"].push_back({{"id", ann++}, {"image_id", i + 1}, {"caption", cap}});
    }
  }
  std::ofstream(dir / "captions.json") << coco.dump();
  return dir / "captions.json";
}

std::vector<std::string> train_args(const fs::path& data, const fs::path& encoder, const fs::path& out) {
  return {CAPTIONER_BINARY,
          "train",
          "--train-captions",
          data.string(),
          "--val-captions",
          data.string(),
          "--train-images",
          data.parent_path().string(),
          "--encoder",
          encoder.string(),
          "--output-dir",
          out.string(),
          "--epochs",
          "5",
          "--batch-captions",
          "8",
          "--embed",
          "16",
          "--hidden",
          "32",
          "--image-dim",
          "8",
          "--min-word-count",
          "1",
          "--checkpoint-every",
          "1",
          "--lr",
          "0.01",
          "--patience",
          "10",
          "--threads",
          "1",
          "--cache-dir",
          (out.parent_path() / "cache").string(),
          "-q"};
}

pid_t spawn(std::vector<std::string> args, const fs::path& log) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "a", stderr);
    (void)f;
    std::freopen("/dev/null", "w", stdout);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<torch::Tensor> checkpoint_weights(const fs::path& dir) {
  torch::serialize::InputArchive a;
  a.load_from((dir / "checkpoint.pt").string());
  std::vector<torch::Tensor> out;
  for (const auto& key : a.keys()) {
    if (key.rfind("model.", 0) == 0) {
      torch::Tensor t;
      a.read(key, t);
      out.push_back(t);
    }
  }
  return out;
}

int epochs_logged(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  int n = 0;
  for (std::string l; std::getline(in, l);) n += json::parse(l)["type"] == "epoch";
  return n;
}
}  // namespace

TEST(Interruption, KillNineAtChosenStepsThenResumeMatchesAnUninterruptedRun) {
  TempDir tmp;
  fs::create_directories(tmp / "data");
  auto data = make_dataset(tmp / "data");
  auto enc = make_tiny_encoder(tmp / "enc");
  ASSERT_EQ(wait_exit(spawn(train_args(data, enc, tmp / "straight"), tmp / "straight.log")), 0);
  auto reference = checkpoint_weights(tmp / "straight");

  // The trainer dies as kill -9 would (_Exit, no clean-up) right after the step named by
  // CAPTIONER_TEST_DIE_AFTER_STEPS: mid-epoch, on an epoch's last step (before its validation and
  // model write), on the next epoch's first step, and in the last epoch. 270 captions / 8 = 34
  // steps per epoch.
  auto out = tmp / "killed";
  for (int step : {5, 34, 35, 150}) {
    auto args = train_args(data, enc, out);
    args.push_back("--resume");
    setenv("CAPTIONER_TEST_DIE_AFTER_STEPS", std::to_string(step).c_str(), 1);
    pid_t pid = spawn(args, tmp / "killed.log");
    unsetenv("CAPTIONER_TEST_DIE_AFTER_STEPS");
    EXPECT_EQ(wait_exit(pid), 137) << "the run did not die at step " << step;
    // Every file on disk is complete.
    EXPECT_NO_THROW(checkpoint_weights(out)) << "torn checkpoint after the kill at step " << step;
    if (fs::exists(out / "config.json")) {
      EXPECT_NO_THROW(ModelBundle::load(out)) << "torn model after the kill at step " << step;
    }
  }
  auto args = train_args(data, enc, out);
  args.push_back("--resume");
  ASSERT_EQ(wait_exit(spawn(args, tmp / "killed.log")), 0);
  auto resumed = checkpoint_weights(out);
  ASSERT_EQ(resumed.size(), reference.size());
  for (size_t i = 0; i < reference.size(); ++i) EXPECT_TRUE(torch::equal(resumed[i], reference[i])) << "weight " << i;
  EXPECT_EQ(epochs_logged(out), 5);
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "leftover " << e.path();
  }
}

// SIGHUP too: a closed terminal or ssh session stops a run as Ctrl-C does.
TEST(Interruption, SigintSigtermAndSighupSaveACheckpointAndExitCleanly) {
  TempDir tmp;
  fs::create_directories(tmp / "data");
  auto data = make_dataset(tmp / "data");
  auto enc = make_tiny_encoder(tmp / "enc");
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    auto out = tmp / ("run" + std::to_string(sig));
    auto args = train_args(data, enc, out);
    args[std::find(args.begin(), args.end(), "--epochs") - args.begin() + 1] = "500";
    pid_t pid = spawn(args, tmp / "sig.log");
    for (int i = 0; i < 200 && !fs::exists(out / "checkpoint.pt"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    kill(pid, sig);
    EXPECT_EQ(wait_exit(pid), 130) << "signal " << sig;
    std::ifstream log(tmp / "sig.log");
    std::string text((std::istreambuf_iterator<char>(log)), {});
    EXPECT_NE(text.find("interrupted: checkpoint saved"), std::string::npos) << text;
    EXPECT_NO_THROW(checkpoint_weights(out));
  }
}

// Issue 27 G: eval scores a whole split or nothing. Ctrl-C (also where the shell started it with
// SIGINT ignored, as for a background job) and SIGTERM stop it with exit 130 and no table.
TEST(Interruption, EvalStopsOnSigintAndSigtermWithoutPrintingScores) {
  TempDir tmp;
  fs::create_directories(tmp / "photos");
  auto enc = make_tiny_encoder(tmp / "enc");
  const fs::path model = tmp / "model";
  make_bundle(enc, make_vocab({"a", "dog", "runs"})).save(model);
  // Enough photos that decoding them one at a time takes many seconds.
  std::vector<uchar> bytes;
  cv::Mat photo(240, 320, CV_8UC3);
  cv::randu(photo, 0, 255);
  cv::imencode(".jpg", photo, bytes);
  json coco{{"images", json::array()}, {"annotations", json::array()}};
  for (int i = 0; i < 20000; ++i) {
    const std::string name = std::to_string(i) + ".jpg";
    std::ofstream(tmp / "photos" / name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    coco["images"].push_back({{"id", i + 1}, {"file_name", name}});
    coco["annotations"].push_back({{"id", i + 1}, {"image_id", i + 1}, {"caption", "a dog runs"}});
  }
  std::ofstream(tmp / "photos" / "captions.json") << coco.dump();
  const std::string eval = std::string(CAPTIONER_BINARY) + " eval --annotations " + (tmp / "photos" / "captions.json").string() +
                           " --images " + (tmp / "photos").string() + " --model " + model.string() +
                           " --encoder-batch 1 --loader-threads 1 --threads 1 --cache-dir '' -q";
  for (int sig : {SIGINT, SIGTERM}) {
    const fs::path log = tmp / ("eval" + std::to_string(sig) + ".log");
    pid_t pid = spawn({"/bin/sh", "-c", "trap '' INT; exec " + eval + " > " + (tmp / "scores.txt").string()}, log);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    kill(pid, sig);
    EXPECT_EQ(wait_exit(pid), 130) << "signal " << sig;
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(text.find("interrupted: no scores"), std::string::npos) << text;
    std::ifstream scores(tmp / "scores.txt");
    std::string table((std::istreambuf_iterator<char>(scores)), {});
    EXPECT_EQ(table.find("BLEU"), std::string::npos) << table;
  }
}
