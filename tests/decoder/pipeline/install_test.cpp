// captioner as a component (issue 29): `cmake --install` into a temporary prefix, then programs
// that embed it: the installed binary from another folder with a clean environment, a C program
// built with pkg-config, a C++ program built with find_package. Each captions as the CLI does;
// the C API's failure paths return NULL with one clear line; threads sharing a model agree.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tests/test_util.h"

using namespace captioner::test;
namespace fs = std::filesystem;

namespace {

bool default_model_usable() { return fs::exists(fs::path(CAPTIONER_SOURCE_DIR) / "models/encoders/mobilenet_v2_int8.pt"); }

// One installation for the whole suite (installing copies ~100 MB of models).
class Install : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!default_model_usable()) return;
    root_ = new TempDir();
    const auto r = run_shell("cmake --install '" + std::string(CAPTIONER_BUILD_DIR) + "' --prefix '" + prefix().string() + "'");
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    // Photos: three made here (no ../shared needed), one broken.
    fs::create_directories(photos());
    const cv::Scalar colours[] = {{20, 120, 230}, {200, 60, 40}, {40, 180, 60}};
    for (int i = 0; i < 3; ++i) {
      cv::Mat img(240, 320, CV_8UC3, colours[i]);
      cv::circle(img, {160, 120}, 60 + 20 * i, cv::Scalar(255, 255, 255) - colours[i], -1);
      cv::imwrite((photos() / ("p" + std::to_string(i) + ".jpg")).string(), img);
    }
    write_text(photos() / "broken.jpg", "not a photo at all");
  }
  static void TearDownTestSuite() {
    delete root_;
    root_ = nullptr;
  }
  void SetUp() override {
    if (!default_model_usable()) GTEST_SKIP() << "the default encoder is not built (scripts/setup.sh makes it from ../shared)";
  }

  static fs::path prefix() { return root_->path() / "prefix"; }
  static fs::path photos() { return root_->path() / "photos"; }
  static fs::path photo(int i) { return photos() / ("p" + std::to_string(i) + ".jpg"); }
  static fs::path work(const std::string& name) {
    fs::create_directories(root_->path() / name);
    return root_->path() / name;
  }
  // The build tree's CLI, with the repository's default model: the reference captions.
  static std::string cli_caption(const fs::path& file) {
    auto r = run_cli("caption " + file.string() + " --format jsonl -q");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["caption"].get<std::string>();
  }

  static TempDir* root_;
};
TempDir* Install::root_ = nullptr;

// A program that uses every entry point of the C API; it prints one line per check.
const char* kCProgram = R"PROG(#include <captioner/captioner.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static captioner_model *model;
static const char *paths[3];
static char *alone[3];
static int disagreements;

static void *caption_all(void *unused) {
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 3; ++i) {
      char *text = captioner_caption_file(model, paths[i]);
      if (!text || strcmp(text, alone[i]) != 0) __atomic_add_fetch(&disagreements, 1, __ATOMIC_SEQ_CST);
      captioner_free_string(text);
    }
  }
  return unused;
}

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  printf("version: %s\n", captioner_version());
  if (captioner_load("/no/such/model") != NULL) return 3;
  printf("missing model: %s\n", captioner_last_error());
  model = captioner_load(NULL); /* the installed default */
  if (!model) { printf("load failed: %s\n", captioner_last_error()); return 4; }
  for (int i = 0; i < 3; ++i) {
    paths[i] = argv[1 + i];
    alone[i] = captioner_caption_file(model, paths[i]);
    printf("file %d: %s\n", i, alone[i] ? alone[i] : captioner_last_error());
  }
  FILE *f = fopen(paths[0], "rb");
  static char bytes[1 << 20];
  size_t n = fread(bytes, 1, sizeof bytes, f);
  fclose(f);
  char *from_bytes = captioner_caption_bytes(model, bytes, n);
  printf("bytes 0: %s\n", from_bytes ? from_bytes : captioner_last_error());
  captioner_free_string(from_bytes);
  const char *batch[4] = {paths[0], argv[4], paths[1], paths[2]};
  captioner_result results[4];
  int ok = captioner_caption_files(model, batch, 4, results);
  printf("batch captioned: %d\n", ok);
  for (int i = 0; i < 4; ++i) {
    printf("batch %d: %s | %s\n", i, results[i].caption ? results[i].caption : "(none)", results[i].error ? results[i].error : "");
    captioner_result_clear(&results[i]);
  }
  if (captioner_caption_file(model, "/no/such/photo.jpg") != NULL) return 5;
  printf("missing photo: %s\n", captioner_last_error());
  if (captioner_caption_bytes(model, "garbage", 7) != NULL) return 6;
  printf("garbage bytes: %s\n", captioner_last_error());
  if (captioner_caption_file(NULL, paths[0]) != NULL || captioner_caption_file(model, NULL) != NULL) return 7;
  printf("null argument: %s\n", captioner_last_error());
  if (captioner_caption_files(model, NULL, 2, results) != -1) return 8;
  captioner_params params = captioner_default_params();
  params.beam_size = 1000;
  if (captioner_load_with_params(NULL, &params) != NULL) return 9;
  printf("bad params: %s\n", captioner_last_error());
  pthread_t threads[4];
  for (int t = 0; t < 4; ++t) pthread_create(&threads[t], NULL, caption_all, NULL);
  for (int t = 0; t < 4; ++t) pthread_join(threads[t], NULL);
  printf("threads disagreeing: %d\n", disagreements);
  for (int i = 0; i < 3; ++i) captioner_free_string(alone[i]);
  captioner_free(model);
  return 0;
}
)PROG";

const char* kCppProgram = R"PROG(#include <captioner/captioner.hpp>
#include <iostream>

int main(int argc, char** argv) {
  captioner::api::Model model;
  std::cout << "file: " << model.caption_file(argv[1]) << "\n";
  for (const auto& r : model.caption_files({argv[1], argv[2]})) {
    std::cout << "batch: " << (r.caption ? r.caption->text : "error " + r.error) << "\n";
  }
  try {
    model.caption_file("/no/such/photo.jpg");
  } catch (const captioner::api::Error& e) {
    std::cout << "error: " << e.what() << "\n";
  }
}
)PROG";

std::string line_after(const std::string& out, const std::string& label) {
  const size_t at = out.find(label);
  if (at == std::string::npos) return "(no line " + label + ")";
  const size_t start = at + label.size();
  return out.substr(start, out.find('\n', start) - start);
}

}  // namespace

TEST_F(Install, InstallsTheBinaryLibraryHeadersPackageFilesAndModels) {
  const fs::path p = prefix();
  for (const char* file :
       {"bin/captioner", "include/captioner/captioner.h", "include/captioner/captioner.hpp", "lib/libcaptioner.so",
        "lib/pkgconfig/captioner.pc", "lib/cmake/captioner/captionerConfig.cmake", "share/captioner/models/default/config.json",
        "share/captioner/models/encoders/mobilenet_v2_int8.pt"}) {
    EXPECT_TRUE(fs::exists(p / file)) << file;
  }
  // A versioned library with a SONAME, exporting the C API and nothing else of the library.
  auto r = run_shell("objdump -p '" + (p / "lib/libcaptioner.so").string() + "' | grep SONAME");
  EXPECT_NE(r.out.find("libcaptioner.so.0"), std::string::npos) << r.out;
  r = run_shell("nm -D --defined-only '" + (p / "lib/libcaptioner.so").string() + "' | awk '{print $3}'");
  EXPECT_NE(r.out.find("captioner_caption_file"), std::string::npos);
  for (const auto& symbol : lines(r.out)) {
    if (!symbol.empty()) {
      EXPECT_EQ(symbol.rfind("captioner_", 0), 0u) << "exported: " << symbol;
    }
  }
  // The public headers include nothing of LibTorch's or OpenCV's: a consumer needs neither.
  const fs::path dir = work("headers");
  write_text(dir / "h.cpp", "#include <captioner/captioner.hpp>\nint main() {}\n");
  r = run_shell("g++ -std=c++17 -M -I'" + (p / "include").string() + "' '" + (dir / "h.cpp").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("captioner/captioner.h"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("torch"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("opencv"), std::string::npos) << r.out;
}

TEST_F(Install, TheInstalledBinaryCaptionsFromAnyFolderWithACleanEnvironment) {
  auto r = run_shell("cd / && env -i PATH=/usr/bin:/bin '" + (prefix() / "bin/captioner").string() + "' caption " +
                     photo(0).string() + " --format jsonl -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["caption"].get<std::string>(), cli_caption(photo(0)));
}

TEST_F(Install, ACProgramBuiltWithPkgConfigCaptionsAsTheCliDoes) {
  const fs::path dir = work("c-program");
  write_text(dir / "prog.c", kCProgram);
  const std::string pc = "PKG_CONFIG_PATH='" + (prefix() / "lib/pkgconfig").string() + "'";
  auto r = run_shell("cd '" + dir.string() + "' && cc -std=c11 -Wall -Werror prog.c -o prog $(" + pc +
                     " pkg-config --cflags --libs captioner) -lpthread -Wl,-rpath,'" + (prefix() / "lib").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = run_shell("cd / && env -i PATH=/usr/bin:/bin '" + (dir / "prog").string() + "' " + photo(0).string() + " " +
                photo(1).string() + " " + photo(2).string() + " " + (photos() / "broken.jpg").string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string& out = r.out;
  EXPECT_NE(out.find("version: captioner 0."), std::string::npos) << out;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(line_after(out, "file " + std::to_string(i) + ": "), cli_caption(photo(i))) << out;
  EXPECT_EQ(line_after(out, "bytes 0: "), cli_caption(photo(0))) << out;
  EXPECT_EQ(line_after(out, "batch captioned: "), "3") << out;
  EXPECT_EQ(line_after(out, "batch 0: "), cli_caption(photo(0)) + " | ") << out;
  EXPECT_NE(line_after(out, "batch 1: ").find("(none) | " + (photos() / "broken.jpg").string() + ": not an image"),
            std::string::npos)
      << out;
  EXPECT_EQ(line_after(out, "batch 3: "), cli_caption(photo(2)) + " | ") << out;
  EXPECT_NE(line_after(out, "missing model: ").find("/no/such/model"), std::string::npos) << out;
  EXPECT_NE(line_after(out, "missing photo: ").find("/no/such/photo.jpg: no such file"), std::string::npos) << out;
  EXPECT_NE(line_after(out, "garbage bytes: ").find("not an image"), std::string::npos) << out;
  EXPECT_NE(line_after(out, "null argument: ").find("must not be NULL"), std::string::npos) << out;
  EXPECT_NE(line_after(out, "bad params: ").find("beam_size"), std::string::npos) << out;
  EXPECT_EQ(line_after(out, "threads disagreeing: "), "0") << out;
}

TEST_F(Install, ACppProgramFoundWithFindPackageCaptionsAsTheCliDoes) {
  const fs::path dir = work("cpp-program");
  write_text(dir / "main.cpp", kCppProgram);
  write_text(dir / "CMakeLists.txt",
             "cmake_minimum_required(VERSION 3.18)\nproject(uses_captioner CXX)\nset(CMAKE_CXX_STANDARD 17)\n"
             "find_package(captioner 0.2 REQUIRED)\nadd_executable(app main.cpp)\n"
             "target_link_libraries(app PRIVATE captioner::captioner)\n");
  auto r = run_shell("cd '" + dir.string() + "' && cmake -S . -B build -DCMAKE_PREFIX_PATH='" + prefix().string() +
                     "' && cmake --build build");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = run_shell("cd / && env -i PATH=/usr/bin:/bin '" + (dir / "build/app").string() + "' " + photo(1).string() + " " +
                (photos() / "broken.jpg").string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(line_after(r.out, "file: "), cli_caption(photo(1))) << r.out;
  EXPECT_EQ(line_after(r.out, "batch: "), cli_caption(photo(1))) << r.out;
  EXPECT_NE(r.out.find("batch: error " + (photos() / "broken.jpg").string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("error: /no/such/photo.jpg: no such file"), std::string::npos) << r.out;
}
