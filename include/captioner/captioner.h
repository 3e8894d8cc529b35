/* captioner's C API: load a model once, then caption photos (files or encoded bytes in memory)
 * from C, C++ or anything with a C FFI (Python's ctypes, Rust, Go). Thread-safe.
 *
 *   captioner_model *m = captioner_load(NULL);              // the installed default model
 *   char *text = captioner_caption_file(m, "dog.jpg");      // "a dog runs through the grass"
 *   if (!text) fprintf(stderr, "%s\n", captioner_last_error());
 *   captioner_free_string(text);
 *   captioner_free(m);
 *
 * Every function that can fail returns NULL (or -1) and leaves one line in
 * captioner_last_error() (this thread's last failure). Strings handed out are malloc'd: release
 * them with captioner_free_string(). Several threads may caption with one model at once: their
 * photos are captioned together in shared batches (a server's requests, say), and each gets the
 * caption a single thread would. No LibTorch or OpenCV header is needed to use this one. */
#ifndef CAPTIONER_CAPTIONER_H
#define CAPTIONER_CAPTIONER_H

#include <stddef.h>

#if defined(__GNUC__)
#define CAPTIONER_API __attribute__((visibility("default")))
#else
#define CAPTIONER_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct captioner_model captioner_model;

/* Decoding options, fixed when a model is loaded. Start from captioner_default_params(): its
 * values mean "the model's own setting", so only what you set changes anything. */
typedef struct captioner_params {
  int beam_size;         /* 1: greedy; 0: the model's (3 for the default model); at most 64 */
  int max_length;        /* most words in a caption; 0: the model's; at most 100 */
  double length_penalty; /* beams ranked by log_prob / (words + 1)^alpha; < 0: the model's */
  double tag_threshold;  /* name what the ImageNet classifier is this sure of (0..1); 0: off; < 0: the model's */
  int threads;           /* CPU threads; 0: every core this process may use */
  int batch_size;        /* photos decoded together at most; 0: 32 */
} captioner_params;

/* One photo's result from the batched calls. */
typedef struct captioner_result {
  char* caption;   /* NULL when the photo could not be captioned: then error says why */
  double log_prob; /* the model's log-probability of the caption (a sum over its words) */
  char* tag;       /* the tag the caption was checked against (tag_threshold > 0, or an animal at the model's
                      subject_threshold; the caption may not name it), or NULL */
  char* error;     /* one line naming the photo and what is wrong, or NULL */
} captioner_result;

CAPTIONER_API captioner_params captioner_default_params(void);

/* Loads a model folder (config.json, vocab.json, decoder.pt; its encoder is found as the CLI
 * finds it). model_dir NULL: $CAPTIONER_MODEL, else the installed default model. NULL on failure. */
CAPTIONER_API captioner_model* captioner_load(const char* model_dir);
CAPTIONER_API captioner_model* captioner_load_with_params(const char* model_dir, const captioner_params* params);

/* The caption of one photo: a file (JPEG, PNG, BMP, WebP, TIFF, PNM), or its encoded bytes in
 * memory. NULL on failure (unreadable or damaged photo, NULL argument). */
CAPTIONER_API char* captioner_caption_file(captioner_model* model, const char* path);
CAPTIONER_API char* captioner_caption_bytes(captioner_model* model, const void* data, size_t size);

/* Many photos at once (faster: they are encoded and decoded in batches). results[i] is filled for
 * every i < count, one failure not stopping the others. Returns how many were captioned, or -1
 * when the call itself failed (NULL arguments). Release each result with captioner_result_clear().
 * captioner_caption_files streams a folder's worth in constant memory, one such call at a time;
 * the other calls decode their photos on the calling thread and share batches with other threads. */
CAPTIONER_API int captioner_caption_files(captioner_model* model, const char* const* paths, size_t count,
                                          captioner_result* results);
CAPTIONER_API int captioner_caption_images(captioner_model* model, const void* const* data, const size_t* sizes, size_t count,
                                           captioner_result* results);
/* As captioner_caption_images, decoding this call's photos with `params` (beam_size, max_length,
 * length_penalty, tag_threshold; 0 / < 0 keep the loaded model's, as at load). For callers whose
 * requests each carry their own options (captioner serve). */
CAPTIONER_API int captioner_caption_images_with(captioner_model* model, const captioner_params* params, const void* const* data,
                                                const size_t* sizes, size_t count, captioner_result* results);
CAPTIONER_API void captioner_result_clear(captioner_result* result);

CAPTIONER_API void captioner_free_string(char* text);
CAPTIONER_API void captioner_free(captioner_model* model);

/* This thread's last failure, one line; "" when none. Valid until this thread's next call. */
CAPTIONER_API const char* captioner_last_error(void);
/* "captioner 0.2.0" */
CAPTIONER_API const char* captioner_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CAPTIONER_CAPTIONER_H */
