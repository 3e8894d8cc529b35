// The feature cache is only an optimisation: one that cannot be written costs the cache, never the
// run; without $HOME it is still this user's own. An encoder failing mid-run is one line.
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>

#include "datasets/file_io.h"
#include "decoder/bundle/install_paths.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, ACacheThatCannotBeWrittenOnlyCostsTheCache) {
  TinyModelFixture f;
  const fs::path captions = f.one_photo_captions();
  write_text(f.tmp / "in_the_way", "a file where the cache folder would go");
  auto r = run_shell("timeout 120 " + std::string(CAPTIONER_BINARY) + " eval --annotations " + captions.string() + " --images " +
                     captions.parent_path().string() + " --model " + f.model.string() + " --cache-dir " +
                     (f.tmp / "in_the_way" / "cache").string() + " -q --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: features not cached"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("BLEU-4"), std::string::npos) << r.out;
}

// With HOME unset the cache must not go to a fixed /tmp folder another local user could have
// created first and filled with planted features.

TEST(Reliability, WithoutHomeTheCacheIsThisUsersOwn) {
  std::optional<std::string> home, xdg;
  if (const char* h = std::getenv("HOME")) home = h;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) xdg = x;
  unsetenv("HOME");
  unsetenv("XDG_CACHE_HOME");
  const fs::path dir = default_cache_dir();
  if (home) setenv("HOME", home->c_str(), 1);
  if (xdg) setenv("XDG_CACHE_HOME", xdg->c_str(), 1);
  EXPECT_EQ(dir.filename().string(), "captioner-cache-" + std::to_string(getuid())) << dir;
  EXPECT_EQ(dir.parent_path(), fs::temp_directory_path()) << dir;
}

// Issue 27 A: in a shared folder another user plants `.<output>.lock` -> a file of root's; root's
// next run must refuse the link, not truncate the file: caption -o, merge -o and train --output-dir.

TEST(Reliability, AnEncoderThatFailsMidRunIsOneLineNotATrace) {
  TempDir tmp;
  torch::jit::Module m("fails_on_pairs");
  m.define(R"(
    def forward(self, x):
        if x.size(0) == 2:
            x = x.view(-1, 7)
        return x.mean(dim=[2, 3])
  )");
  const fs::path encoder = tmp / "encoders" / "fails_on_pairs.pt";
  fs::create_directories(encoder.parent_path());
  m.save(encoder.string());
  fs::copy_file(make_tiny_encoder(tmp / "tiny").string() + ".json", encoder.string() + ".json");
  make_bundle(encoder, make_vocab({"a", "dog"})).save(tmp / "model");
  for (const char* n : {"a.jpg", "b.jpg"}) write_text(tmp / n, solid_jpeg(0, 0, 255));
  auto r = run_cli("caption " + (tmp / "a.jpg").string() + " " + (tmp / "b.jpg").string() + " --model " +
                   (tmp / "model").string() + " -q");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("encoder " + encoder.string() + " failed on a batch of 2"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// A cache is only an optimisation: with a cache folder that cannot be made (read-only HOME, a file
// in the way) eval encoded everything and then failed. It now warns and scores.
