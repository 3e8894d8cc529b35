// Model folders as users handle them: hand-edited settings out of range are one-line errors, and
// a copied model folder still finds its encoder.
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <tuple>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, HandEditedModelSettingsOutOfRangeAreOneLineErrors) {
  TinyModelFixture f;
  write_text(f.tmp / "good.jpg", solid_jpeg(0, 0, 255));
  const std::string config = read_file(f.model / "config.json");
  auto edited = [&](const std::string& from, const std::string& to) {
    auto at = config.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    std::string c = config;
    if (at != std::string::npos) c.replace(at, from.size(), to);
    write_text(f.model / "config.json", c);
    return f.caption((f.tmp / "good.jpg").string());
  };
  const std::string beam = "\"beam_size\": " + std::to_string(nlohmann::json::parse(config)["search"]["beam_size"].get<int>());
  for (const auto& [from, to, word] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {beam, "\"beam_size\": 100000", "beam_size"},
           {"\"hidden_dim\": ", "\"hidden_dim\": 1099511627776, \"x\": ", "hidden_dim"}}) {
    auto r = edited(from, to);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_LT(r.exit_code, 128) << "crashed:\n" << r.err;
    EXPECT_NE(r.err.find(word), std::string::npos) << r.err;
    EXPECT_LE(count_lines(r.err), 1u) << r.err;
  }
  write_text(f.model / "config.json", config);
  auto r = f.caption((f.tmp / "good.jpg").string() + " --sample --temperature 1e-45");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << r.err;
  EXPECT_NE(r.err.find("temperature"), std::string::npos) << r.err;
}

TEST(Reliability, ACopiedModelFolderStillFindsItsEncoder) {
  const fs::path source = fs::path(CAPTIONER_SOURCE_DIR) / "models";
  if (!fs::exists(source / "encoders/mobilenet_v2_int8.pt"))
    GTEST_SKIP() << "the default encoder is not built: run scripts/setup.sh";
  TempDir tmp;
  fs::copy(source / "default", tmp / "copied", fs::copy_options::recursive);
  write_text(tmp / "a.jpg", solid_jpeg(0, 0, 255));
  auto r = run_shell("timeout 120 " + std::string(CAPTIONER_BINARY) + " caption " + (tmp / "a.jpg").string() + " --model " +
                     (tmp / "copied").string() + " -q");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
}

// A 16-bit RGBA PNG inside --max-pixels took 5.5 GB: converted and composited at full size in
// float. It is now shrunk in its own depth first; the whole process stays under 1.5 GB.
