// `captioner train` as a job: it never replaces a model unless asked, fails cleanly on a full disk
// and resumes later, and reads no photo outside its image folder (issue 27 C).
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, TrainingNeverReplacesAModelUnlessAsked) {
  TinyModelFixture f;
  const std::string before = read_file(f.model / "config.json");
  auto r = f.train_one_photo(f.model, "", 1);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("already holds a model or run"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(f.model / "config.json"), before) << "the model was replaced";
  r = f.train_one_photo(f.model, " --overwrite", 1);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(read_file(f.model / "config.json"), before);
}

TEST(Reliability, TrainingOnAFullDiskFailsCleanlyAndResumesLater) {
  TinyModelFixture f;
  ASSERT_EQ(f.train_one_photo(f.tmp / "full_size", "", 2).exit_code, 0);
  const auto checkpoint_kb = fs::file_size(f.tmp / "full_size/checkpoint.pt") / 1024;
  ASSERT_GT(checkpoint_kb, 2u);
  // A file-size limit below the checkpoint's size makes its write fail as a full disk does
  // (EFBIG instead of ENOSPC; SIGXFSZ ignored, as a full disk sends no signal).
  const fs::path out = f.tmp / "run";
  auto r = f.train_one_photo(out, "", 2, "ulimit -f " + std::to_string(checkpoint_kb / 2) + "; trap '' XFSZ; ");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 134) << "aborted:\n" << r.err;
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cannot write"), std::string::npos) << r.err;
  EXPECT_LE(count_lines(r.err), 2u) << "not a one-line error:\n" << r.err;
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "leftover " << e.path();
  }
  // Space is back: the same run continues.
  r = f.train_one_photo(out, " --resume", 2);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out / "config.json"));
  // A finished run continues when asked for more epochs, instead of "nothing to resume".
  r = f.train_one_photo(out, " --resume --patience 5", 3);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::ifstream metrics(out / "metrics.jsonl");
  int epochs = 0;
  for (std::string line; std::getline(metrics, line);) epochs += line.find("\"type\":\"epoch\"") != std::string::npos;
  EXPECT_EQ(epochs, 3) << r.err;
}

TEST(Reliability, TrainingReadsNoPhotoOutsideItsImageFolder) {
  TinyModelFixture f;
  fs::create_directories(f.tmp / "outside");
  write_text(f.tmp / "outside" / "eagle.jpg", solid_jpeg(0, 0, 255));
  fs::create_directories(f.tmp / "data" / "sub");
  write_text(f.tmp / "data" / "1.jpg", solid_jpeg(0, 0, 255));
  const std::string bad_names[] = {"../outside/eagle.jpg", "sub/../../outside/eagle.jpg",
                                   (f.tmp / "outside" / "eagle.jpg").string()};
  for (const auto& name : bad_names) {
    write_text(
        f.tmp / "data" / "escape.json",
        R"({"images":[{"id":1,"file_name":"1.jpg"},{"id":2,"file_name":")" + name +
            R"("}],"annotations":[{"image_id":1,"id":1,"caption":"a dog runs"},{"image_id":2,"id":2,"caption":"an eagle flies"}]})");
    auto r = run_shell(
        "timeout 120 " + std::string(CAPTIONER_BINARY) + " train --train-captions " + (f.tmp / "data" / "escape.json").string() +
        " --val-captions " + (f.tmp / "data" / "escape.json").string() + " --train-images " + (f.tmp / "data").string() +
        " --encoder " + f.encoder.string() + " --min-word-count 1 --epochs 1 -q --output-dir " + (f.tmp / "run-escape").string());
    EXPECT_EQ(r.exit_code, 3) << name << ": " << r.err;
    EXPECT_NE(r.err.find("escape.json"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("images[1].file_name"), std::string::npos) << r.err;
    EXPECT_TRUE(r.err.find("outside the image folder") != std::string::npos || r.err.find("climbs out") != std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(f.tmp / "run-escape" / "vocab.json"));
  }
  // A link the user put inside the folder is the user's choice.
  fs::create_symlink(f.tmp / "outside" / "eagle.jpg", f.tmp / "data" / "linked.jpg");
  write_text(f.tmp / "data" / "linked.json",
             R"({"images":[{"id":1,"file_name":"1.jpg"},{"id":2,"file_name":"sub/../linked.jpg"}],)"
             R"("annotations":[{"image_id":1,"id":1,"caption":"a dog runs"},{"image_id":2,"id":2,"caption":"a dog runs"}]})");
  auto r = run_shell("timeout 300 " + std::string(CAPTIONER_BINARY) + " train --train-captions " +
                     (f.tmp / "data" / "linked.json").string() + " --val-captions " + (f.tmp / "data" / "linked.json").string() +
                     " --train-images " + (f.tmp / "data").string() + " --encoder " + f.encoder.string() +
                     " --min-word-count 1 --epochs 1 -q --output-dir " + (f.tmp / "run-linked").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// Issue 32, part 2: captions without photos teach the decoder language first (image term off),
// in a run of their own under <output-dir>/text_phase; a caption with a word the photos' captions
// never use is dropped, not taught as <unk>.
TEST(TrainJob, ATextPhaseTrainsTheDecoderOnCaptionsWithoutPhotosFirst) {
  TinyModelFixture f;
  const fs::path text = f.tmp / "text" / "Flickr30k.token.txt";
  fs::create_directories(text.parent_path());
  write_text(text, "absent1.jpg#0\ta dog runs a dog runs\nabsent2.jpg#0\ta cat sleeps\n");
  const fs::path with_text = f.tmp / "with_text", plain = f.tmp / "plain";
  auto r = f.train_one_photo(with_text, " --text-captions " + text.string() + " --text-epochs 1", 1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE((r.out + r.err).find("text phase: 1 of 2 captions"), std::string::npos) << r.out << r.err;
  const auto phase = nlohmann::json::parse(read_file(with_text / "text_phase" / "config.json"));
  EXPECT_EQ(phase["training"]["phase"], "text");
  EXPECT_EQ(phase["training"]["captions_used"], 1);
  const auto model = nlohmann::json::parse(read_file(with_text / "config.json"));
  EXPECT_EQ(model["training"]["options"]["text_epochs"], 1);
  EXPECT_EQ(model["training"]["options"]["text_captions"], text.string());

  ASSERT_EQ(f.train_one_photo(plain, "", 1).exit_code, 0);
  EXPECT_NE(read_file(with_text / "decoder.pt"), read_file(plain / "decoder.pt"))
      << "the photos' training did not start from the text phase's weights";
}

TEST(TrainJob, TextCaptionsThatShareNoVocabularyAreOneLineNamingTheFile) {
  TinyModelFixture f;
  const fs::path text = f.tmp / "unrelated.token.txt";
  write_text(text, "absent.jpg#0\ttwo cats sleep\n");
  const auto r = f.train_one_photo(f.tmp / "out", " --text-captions " + text.string(), 1);
  expect_one_line_error(r, 3, {text.string(), "no caption uses only the words"});
}
