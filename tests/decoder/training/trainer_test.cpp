#include "decoder/training/trainer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::test::TempDir;

namespace {
// A learnable toy task: the image's first feature says whether the caption is about a dog or a
// cat, so validation BLEU can rise.
struct Toy {
  ModelBundle model;
  TrainingData train;
  ValidationData val;
};

Toy make_toy(const std::filesystem::path& dir) {
  Toy t;
  auto vocab = test::make_vocab({"a", "dog", "cat", "runs", "sits", "on", "the", "grass", "mat"});
  t.model = test::make_bundle(test::make_tiny_encoder(dir / "enc"), vocab, "lstm", 7, 32);
  t.model.members[0].decoder->train();
  torch::manual_seed(11);
  const int64_t N = 60;
  t.train.features = torch::randn({N, 3});
  t.train.flipped = t.train.features.flip({1});
  for (int64_t i = 0; i < N; ++i) {
    bool dog = t.train.features[i][0].item<float>() > 0;
    for (int k = 0; k < 3; ++k) {
      std::vector<std::string> w = dog ? std::vector<std::string>{"a", "dog", "runs", "on", "the", "grass"}
                                       : std::vector<std::string>{"a", "cat", "sits", "on", "the", "mat"};
      if (k == 1) w.resize(3);
      t.train.captions.push_back(vocab.encode(w));
      t.train.caption_image.push_back(i);
    }
  }
  t.val.features = torch::tensor({{1.5f, 0.f, 0.f}, {-1.5f, 0.f, 0.f}});
  t.val.references = {{"a dog runs on the grass"}, {"a cat sits on the mat"}};
  return t;
}

TrainerOptions options() {
  TrainerOptions o;
  o.epochs = 3;
  o.batch_size = 16;
  o.learning_rate = 0.01;
  o.checkpoint_every = 4;
  o.log_every = 2;
  o.seed = 5;
  o.flip_augment = true;
  o.patience = 10;
  return o;
}

std::vector<torch::Tensor> params(const std::filesystem::path& dir, const std::string& prefix = "model.") {
  std::vector<torch::Tensor> out;
  torch::serialize::InputArchive a;
  a.load_from((dir / "checkpoint.pt").string());
  auto toy = make_toy(dir.parent_path() / "probe");
  for (const auto& p : toy.model.members[0].decoder->named_parameters()) {
    torch::Tensor t;
    a.read(prefix + p.key(), t);
    out.push_back(t);
  }
  return out;
}
}  // namespace

TEST(Trainer, LearnsTheToyTaskAndKeepsTheBestModel) {
  TempDir tmp;
  auto toy = make_toy(tmp.path());
  auto o = options();
  o.epochs = 12;
  Trainer trainer(toy.model, toy.train, toy.val, o, tmp / "out");
  auto r = trainer.run();
  ASSERT_EQ(r.history.size(), 12u);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss * 0.5);
  EXPECT_GT(r.best_bleu[3], 0.9) << "the toy captions are fully determined by the image";
  auto best = ModelBundle::load(tmp / "out");
  EXPECT_EQ(best.training["best_epoch"], r.best_epoch);
  // The mean training photo, for mutual-information decoding.
  ASSERT_TRUE(best.image_prior.defined());
  EXPECT_TRUE(torch::allclose(best.image_prior, toy.train.features.mean(0)));
  EXPECT_EQ(best.image_prior_images, toy.train.features.size(0));
  // metrics.jsonl: loss lines and one line per epoch.
  std::ifstream in(tmp / "out/metrics.jsonl");
  int epochs = 0, batches = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    epochs += j["type"] == "epoch";
    batches += j["type"] == "batch";
  }
  EXPECT_EQ(epochs, 12);
  EXPECT_GT(batches, 12);
}

namespace {
void check_resume_is_exact(double ema_decay) {
  TempDir tmp;
  auto toy = make_toy(tmp.path());
  auto options = [&] {
    auto o = ::options();
    o.ema_decay = ema_decay;
    return o;
  };
  {
    Trainer straight(toy.model, toy.train, toy.val, options(), tmp / "straight");
    straight.run();
  }
  // Same start, stopped mid-epoch 2 (as by Ctrl-C), then resumed by a fresh process-like trainer.
  auto toy2 = make_toy(tmp.path());
  std::atomic<bool> stop{false};
  auto o = options();
  o.stop = &stop;
  int64_t seen = 0;
  TrainerCallbacks cb;
  cb.on_batch = [&](int epoch, int64_t, int64_t, double, double) {
    if (epoch == 2 && ++seen == 5) stop = true;
  };
  Trainer first(toy2.model, toy2.train, toy2.val, o, tmp / "resumed");
  auto r1 = first.run(cb);
  ASSERT_TRUE(r1.interrupted);
  torch::manual_seed(999);  // a new process starts with other random state; the checkpoint restores it
  auto toy3 = make_toy(tmp.path());
  auto o2 = options();
  o2.resume = true;
  Trainer second(toy3.model, toy3.train, toy3.val, o2, tmp / "resumed");
  auto r2 = second.run();
  EXPECT_FALSE(r2.interrupted);
  EXPECT_EQ(r2.epochs_completed, 3);
  auto a = params(tmp / "straight"), b = params(tmp / "resumed");
  ASSERT_EQ(a.size(), b.size());
  // The resumed run's log is the straight run's: lines after the checkpoint were dropped and
  // logged again, in order, with the same numbers (times aside).
  const TrainingLog la = read_training_log(tmp / "straight/metrics.jsonl");
  const TrainingLog lb = read_training_log(tmp / "resumed/metrics.jsonl");
  ASSERT_EQ(la.batches.size(), lb.batches.size());
  for (size_t i = 0; i < la.batches.size(); ++i) {
    EXPECT_EQ(la.batches[i].step, lb.batches[i].step);
    EXPECT_EQ(la.batches[i].loss, lb.batches[i].loss) << "batch line " << i;
  }
  ASSERT_EQ(la.epochs.size(), lb.epochs.size());
  for (size_t i = 0; i < la.epochs.size(); ++i) {
    EXPECT_EQ(la.epochs[i].train_loss, lb.epochs[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(la.epochs[i].bleu, lb.epochs[i].bleu) << "epoch " << i + 1;
    EXPECT_EQ(la.epochs[i].cider_d, lb.epochs[i].cider_d) << "epoch " << i + 1;
    EXPECT_GE(la.epochs[i].cider_d, 0) << "validation CIDEr-D is logged every epoch";
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i << " differs";
  if (ema_decay > 0) {
    auto ea = params(tmp / "straight", "ema."), eb = params(tmp / "resumed", "ema.");
    for (size_t i = 0; i < ea.size(); ++i) EXPECT_TRUE(torch::equal(ea[i], eb[i])) << "average " << i << " differs";
    EXPECT_FALSE(torch::equal(ea[0], a[0])) << "the average should lag the last step";
  }
  // Resuming a finished run does nothing.
  auto toy4 = make_toy(tmp.path());
  Trainer third(toy4.model, toy4.train, toy4.val, o2, tmp / "resumed");
  EXPECT_EQ(third.run().epochs_completed, 3);
}
}  // namespace

TEST(Trainer, ResumeContinuesBitForBit) { check_resume_is_exact(0.0); }

TEST(Trainer, ResumeWithWeightAveragingContinuesBitForBit) { check_resume_is_exact(0.9); }

TEST(Trainer, WeightAveragingLearnsAndSavesTheAverage) {
  TempDir tmp;
  auto toy = make_toy(tmp.path());
  auto o = options();
  o.epochs = 12;
  o.ema_decay = 0.9;
  auto r = Trainer(toy.model, toy.train, toy.val, o, tmp / "out").run();
  EXPECT_GT(r.best_bleu[3], 0.9);
  // The saved bundle holds the averaged weights of its epoch: validating it again gives its score.
  auto best = ModelBundle::load(tmp / "out");
  auto again = make_toy(tmp.path());
  again.model.members = best.members;
  auto o2 = options();
  Trainer check(again.model, again.train, again.val, o2, tmp / "check");
  EXPECT_DOUBLE_EQ(check.validate().bleu[3], r.best_bleu[3]);
}

TEST(TrainingState, RoundTripsAndReadsTheCheckpointsOfEarlierVersions) {
  TrainingState s;
  s.epoch = 2;
  s.next_batch = 7;
  s.step = 31;
  s.best_bleu4 = 0.25;
  s.best_epoch = 2;
  s.bad_epochs = 0;
  s.epoch_loss_sum = 12.5;
  s.epoch_items = 96;
  s.epoch_seconds = 3.5;
  EpochReport r;
  r.epoch = 2;
  r.step = 24;
  r.bleu = {0.5, 0.4, 0.3, 0.25};
  s.history = {r};
  std::string fingerprint;
  const TrainingState back = training_state_from_json(training_state_to_json(s, "abc"), "ckpt", &fingerprint);
  EXPECT_EQ(fingerprint, "abc");
  EXPECT_EQ(back.step, 31);
  EXPECT_EQ(back.next_batch, 7);
  EXPECT_EQ(back.epoch_items, 96);
  EXPECT_EQ(back.epoch_loss_sum, 12.5);
  ASSERT_EQ(back.history.size(), 1u);
  EXPECT_EQ(back.history[0].bleu, r.bleu);
  // A state as the trainer wrote it before the state was typed (no "finished", no reward sum).
  const std::string old = R"({"step": 4, "best_bleu4": -1.0, "best_epoch": 0, "bad_epochs": 0, "epoch_loss_sum": 1.5,
      "epoch_loss_count": 16, "epoch_seconds": 0.2, "history": [], "epoch": 0, "next_batch": 4, "fingerprint": "f"})";
  const TrainingState o = training_state_from_json(old, "old.pt", nullptr);
  EXPECT_EQ(o.next_batch, 4);
  EXPECT_FALSE(o.finished);
  test::expect_error_message([] { training_state_from_json(R"({"epoch": "two"})", "bad.pt", nullptr); }, {"bad.pt"});
}

TEST(RunDirectory, ALogLineThatCannotBeWrittenFailsTheRun) {
  TempDir tmp;
  RunDirectory run(tmp / "run", nullptr);
  run.log(BatchLogLine{1, 1, 1, 2.0, 0.01});
  std::filesystem::remove_all(tmp / "run");
  std::filesystem::create_directories(tmp / "run/metrics.jsonl");                                     // a folder in the log's way
  test::expect_error_message([&] { run.log(BatchLogLine{1, 2, 2, 1.9, 0.01}); }, {"metrics.jsonl"});  // a lost line is an error
}

TEST(Trainer, RefusesToResumeWithOtherData) {
  TempDir tmp;
  auto toy = make_toy(tmp.path());
  auto o = options();
  o.epochs = 1;
  Trainer(toy.model, toy.train, toy.val, o, tmp / "out").run();
  auto other = make_toy(tmp.path());
  other.train.captions.pop_back();
  other.train.caption_image.pop_back();
  o.resume = true;
  Trainer t(other.model, other.train, other.val, o, tmp / "out");
  test::expect_error_message([&] { t.run(); }, {"other data"});  // a checkpoint made for other data
}
