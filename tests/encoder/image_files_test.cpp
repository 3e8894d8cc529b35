// Which files a folder yields as photos, and what is refused before it is read: symbolic-link
// loops, pipes and devices, Netpbm photos, a large 16-bit PNG in bounded memory (issue 14).
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, SymlinkLoopsUnderRecursiveVisitEachFolderOnce) {
  TinyModelFixture f;
  fs::path root = f.tmp / "loop";
  fs::create_directories(root / "sub");
  write_text(root / "sub/a.jpg", solid_jpeg(0, 0, 255));
  fs::create_directory_symlink("..", root / "sub/up1");
  fs::create_directory_symlink("..", root / "sub/up2");
  fs::create_directory_symlink("../sub", root / "sub/self");
  auto r = f.caption(root.string() + " --recursive");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 1u) << "the photo was listed more than once:\n" << r.out;
  EXPECT_EQ(r.err.find("broken symbolic link"), std::string::npos) << r.err;
}

TEST(Reliability, PipesAndDevicesAreRefusedNotReadForever) {
  TinyModelFixture f;
  fs::path fifo = f.tmp / "pipe.jpg";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  write_text(f.tmp / "good.jpg", solid_jpeg(0, 0, 255));
  auto r = f.caption(fifo.string() + " /dev/zero " + (f.tmp / "good.jpg").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;  // the good photo is captioned, the rest named
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
  EXPECT_NE(r.err.find(fifo.string() + ": not a regular file"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/dev/zero: not a regular file"), std::string::npos) << r.err;
  // A FIFO inside a listed folder is skipped like any other non-photo, without blocking.
  fs::create_directories(f.tmp / "dir");
  ASSERT_EQ(mkfifo((f.tmp / "dir/p.jpg").c_str(), 0600), 0);
  write_text(f.tmp / "dir/ok.jpg", solid_jpeg(0, 0, 255));
  r = f.caption((f.tmp / "dir").string());
  EXPECT_NE(r.exit_code, 124) << "hung on the FIFO";
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
}

TEST(Reliability, NetpbmPhotosAreImages) {
  TinyModelFixture f;
  cv::imwrite((f.tmp / "gray.pgm").string(), cv::Mat(10, 12, CV_8UC1, cv::Scalar(90)));
  cv::imwrite((f.tmp / "color.ppm").string(), cv::Mat(10, 12, CV_8UC3, cv::Scalar(1, 2, 3)));
  std::vector<uchar> ppm;
  cv::imencode(".ppm", cv::Mat(10, 12, CV_8UC3, cv::Scalar(4, 5, 6)), ppm);
  write_text(f.tmp / "no_extension", std::string(ppm.begin(), ppm.end()));  // found by its bytes
  auto r = f.caption(f.tmp.path().string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 3u) << r.out << r.err;
}

TEST(Reliability, ALarge16BitPngIsCaptionedInBoundedMemory) {
  TinyModelFixture f;
  const fs::path png = f.tmp / "big.png";
  {
    cv::Mat big(8000, 8000, CV_16UC4, cv::Scalar(20000, 40000, 60000, 50000));
    cv::rectangle(big, {1000, 1000}, {3000, 5000}, cv::Scalar(65535, 0, 0, 65535), cv::FILLED);
    ASSERT_TRUE(cv::imwrite(png.string(), big, {cv::IMWRITE_PNG_COMPRESSION, 1}));
  }
  pid_t child = fork();
  if (child == 0) {
    const std::string model = f.model.string(), file = png.string();
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execl(CAPTIONER_BINARY, CAPTIONER_BINARY, "caption", file.c_str(), "--model", model.c_str(), "-q",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ASSERT_EQ(wait4(child, &status, 0, &usage), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const double peak_mib = usage.ru_maxrss / 1024.0;
  EXPECT_LT(peak_mib, 1536) << "captioning one 8000x8000 16-bit PNG peaked at " << peak_mib << " MiB";
}

// `-o same.jpg` with same.jpg among the photos replaced the photo with JSON, exit 0.
