/* io.h: the io room of the runtime (runtime/io/), internal: not part of the ABI in modelc_rt.h.
 * The file formats: safetensors (read by mmap, fully validated, with its own strict JSON parser),
 * NumPy .npy, whole files in and out (atomic writes), the byte-level tokenizer and the tokenizers of
 * --tokenizer (llama2.c, GPT-2 BPE). io/ includes
 * core/ and nothing of kernels/ or prog/. */
#ifndef MODELC_RT_IO_H
#define MODELC_RT_IO_H

#include <stddef.h>
#include <stdint.h>

#include "../core/core.h"
#include "../modelc_rt.h"

/* ---------------------------------------------------------------------------------------------
 * safetensors (io/safetensors.c; see docs/runtime.md for the list of checks)
 * ------------------------------------------------------------------------------------------- */

/* One tensor: a view into the file (or, for writing, the caller's memory). */
typedef struct RtTensor {
  const char *name;
  RtDType dtype;
  int ndim; /* 0 for a scalar */
  int64_t shape[RT_MAX_DIMS];
  const void *data; /* aligned to rt_dtype_size(dtype) (the reader copies if needed) */
  size_t nbytes;
} RtTensor;

typedef struct RtSafetensors RtSafetensors; /* opaque */

/* Opens and validates path. On success *out owns the mapping; release with rt_st_close. */
int rt_st_open(RtSafetensors **out, const char *path, RtError *err);
/* Validates an in-memory image (8-byte length, header, data). buf must outlive the handle; `name`
 * is used in messages. Used by tests and fuzz targets. */
int rt_st_open_buffer(RtSafetensors **out, const void *buf, size_t size, const char *name, RtError *err);
void rt_st_close(RtSafetensors *st);

int rt_st_count(const RtSafetensors *st);
const RtTensor *rt_st_tensor(const RtSafetensors *st, int i);          /* header order */
const RtTensor *rt_st_find(const RtSafetensors *st, const char *name); /* NULL if absent */
/* The __metadata__ value for key, or NULL. */
const char *rt_st_metadata(const RtSafetensors *st, const char *key);
/* Finds `name` and checks its dtype and shape (ndim < 0 skips the shape check); on failure the
 * message names the file, the tensor and what differs. *out may be NULL. */
int rt_st_require(const RtSafetensors *st, const char *name, RtDType dtype, int ndim, const int64_t *shape,
                  const RtTensor **out, RtError *err);

/* Writes tensors (in the given order, packed) and optional metadata (n_meta key/value pairs in
 * meta[2*i], meta[2*i+1]) to path: header padded with spaces to a multiple of 8 bytes, written
 * to a temporary file in the same directory, fsync'd, then renamed over path. */
int rt_st_write(const char *path, const RtTensor *tensors, int n, const char *const *meta, int n_meta, RtError *err);

/* Converts any float tensor (F32, F16, BF16, F64) to float32; out holds nbytes/size elements. */
int rt_tensor_to_f32(const RtTensor *t, float *out, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * The strict JSON cursor (io/json.c): the safetensors header, the tokenizers' JSON files
 * ------------------------------------------------------------------------------------------- */

typedef struct RtJs {
  const char *start, *p, *end;
  const char *file;
  RtError *err;
  char *arena; /* decoded strings; capacity >= the input's length, which always suffices */
  size_t used;
  const char *what; /* in messages: "invalid WHAT at byte N"; NULL: "JSON header" */
} RtJs;

/* Each returns 0, or -1 with the message "FILE: invalid WHAT at byte N: ..." in j->err. */
int rt_js_fail(RtJs *j, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void rt_js_ws(RtJs *j);
int rt_js_expect(RtJs *j, char c);
int rt_js_peek(RtJs *j); /* the next non-space byte, or -1 at the end */
/* A string into the arena (NUL-terminated; an embedded \u0000 is rejected). */
int rt_js_string(RtJs *j, const char **out);
int rt_js_uint(RtJs *j, uint64_t *out); /* a non-negative integer that fits in int64 */
int rt_js_uint_array(RtJs *j, uint64_t *vals, int max, int *n, const char *what);
/* "key": value pairs of an object: call with *first = 1; 1 with *key set and the cursor at the
 * value, 0 at the closing brace, -1 on error. */
int rt_js_next_key(RtJs *j, int *first, const char **key);
/* The elements of an array whose '[' has been read: call with *first = 1; 1 with the cursor at the
 * next element, 0 past the closing ']', -1 on error ("expected ',' or ']' in WHAT"). */
int rt_js_next_elem(RtJs *j, int *first, const char *what);
int rt_js_skip(RtJs *j); /* one value of any kind, its strings not kept */
/* The n hex digits at s (either case) as a number in *out: 0, or -1 at a non-hex byte. JSON's
 * \uXXXX escapes and llama2.c's byte pieces <0xHH> (io/tokenizer.c) read them. */
int rt_hex_digits(const char *s, int n, unsigned *out);

/* ---------------------------------------------------------------------------------------------
 * NumPy .npy (io/npy.c; versions 1.0, 2.0, 3.0; dtypes <f4, <i4, <i8; C order only)
 * ------------------------------------------------------------------------------------------- */

typedef struct RtNpy {
  RtDType dtype; /* RT_DT_F32, RT_DT_I32 or RT_DT_I64 */
  int ndim;
  int64_t shape[RT_MAX_DIMS];
  void *data; /* owned, 64-byte aligned; release with rt_npy_free */
  size_t nbytes;
} RtNpy;

int rt_npy_read(const char *path, RtNpy *out, RtError *err);
/* Parses an in-memory image (copies the data); `name` is used in messages. */
int rt_npy_parse(const void *buf, size_t size, const char *name, RtNpy *out, RtError *err);
void rt_npy_free(RtNpy *a);
/* Writes a C-order array; path "-" writes to stdout, any other path is written atomically
 * (temporary file, fsync, rename). Version 1.0 unless the header needs 2.0. */
int rt_npy_write(const char *path, RtDType dtype, int ndim, const int64_t *shape, const void *data, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * Whole files (io/file.c): atomic writing (used by the writers, checkpoints, reports) and reading
 * ------------------------------------------------------------------------------------------- */

typedef struct RtChunk {
  const void *data;
  size_t len;
} RtChunk;

/* Writes the concatenation of chunks to "path.tmp.XXXXXX", fsyncs, renames to path. First removes
 * leftovers "path.tmp.XXXXXX" (exactly that pattern) of earlier writes that were killed; the file
 * gets mode 0666 less the umask, as any new file does. */
int rt_write_file_atomic(const char *path, const RtChunk *chunks, int n, RtError *err);

/* 1 if both paths exist and are the same file (device and inode), else 0. */
int rt_same_file(const char *a, const char *b);

/* Reads a whole file into a malloc'd buffer (*out, *n). -1 with a message naming the file. Bounded
 * (docs/runtime.md): a regular file up to RT_READ_MAX_BYTES, anything else (a device, a FIFO) up to
 * RT_READ_MAX_STREAM_BYTES; a directory is "is a directory". */
#define RT_READ_MAX_BYTES ((uint64_t)64 << 30)
#define RT_READ_MAX_STREAM_BYTES ((uint64_t)256 << 20)
int rt_read_file(const char *path, unsigned char **out, size_t *n, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * Byte-level tokenizer (io/text.c): vocabulary 256, id == byte value.
 * ------------------------------------------------------------------------------------------- */

#define RT_BYTE_VOCAB 256
/* ids (n) <- bytes of text (n); returns n. */
size_t rt_byte_encode(int32_t *ids, const void *text, size_t n);
/* text (n bytes) <- ids (n); an id outside [0,256) is an error naming its position. */
int rt_byte_decode(char *text, const int32_t *ids, size_t n, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * Tokenizers of --tokenizer (io/tokenizer.c, io/bpe.c; docs/runtime.md, "Tokenizers"): llama2.c's
 * tokenizer.bin, GPT-2's byte-level BPE (encoder.json + vocab.bpe, or a Hugging Face tokenizer.json)
 * ------------------------------------------------------------------------------------------- */

#define RT_TOK_MAX_VOCAB (1 << 24)
typedef enum { RT_TOK_LLAMA2C = 1, RT_TOK_GPT2, RT_TOK_HF } RtTokKind;

typedef struct RtTokenizer {
  RtTokKind kind;
  int vocab;
  char *store;      /* every piece's bytes (GPT-2: the raw bytes, not the byte-to-unicode letters) */
  size_t *off;      /* piece id at store + off[id], len[id] bytes */
  uint32_t *len;
  float *score;     /* llama2.c: the merge scores */
  int max_len;      /* the longest piece, bytes */
  int32_t *hash;    /* open addressing, hcap slots (a power of 2): piece bytes -> id, -1 empty */
  size_t hcap;
  int32_t bos, eos; /* llama2.c: 1 and 2; GPT-2: -1 and <|endoftext|>'s id (or -1) */
  /* byte-level BPE: merges (first id, second id) -> (rank, merged id), open addressing */
  uint64_t *merge_key; /* (a << 32 | b) + 1, 0 empty */
  int64_t *merge_val;  /* rank << 32 | merged id */
  size_t mcap;
  int32_t byte_id[256]; /* byte-level BPE: the id of each one-byte piece */
} RtTokenizer;

/* Loads path, its format by the file (docs/runtime.md): a directory holding encoder.json and
 * vocab.bpe, tokenizer.json or tokenizer.bin (in that order); a file named *encoder.json (vocab.bpe
 * beside it) or *vocab.bpe (encoder.json beside it); any other *.json as a Hugging Face
 * tokenizer.json; anything else as llama2.c's tokenizer.bin. -1 with a message naming the file. */
int rt_tok_load(RtTokenizer *t, const char *path, RtError *err);
void rt_tok_free(RtTokenizer *t);
/* Encodes n bytes of text into *ids (malloc'd, *count ids). llama2.c: BOS first when add_bos, then
 * run.c's encoding (a dummy-prefix space when n > 0); GPT-2: add_bos is ignored (GPT-2 has no BOS). */
int rt_tok_encode(const RtTokenizer *t, const void *text, size_t n, int add_bos, int32_t **ids, size_t *count,
                  RtError *err);
/* The bytes id decodes to after prev (-1: none): llama2.c strips the leading space of the piece after
 * BOS and turns <0xXX> into its byte. An id outside the vocabulary decodes to nothing. */
void rt_tok_piece(const RtTokenizer *t, int32_t prev, int32_t id, const char **s, size_t *n);
/* "llama2.c tokenizer.bin" and the like, for messages. */
const char *rt_tok_kind_name(const RtTokenizer *t);

/* Shared by io/tokenizer.c and io/bpe.c: allocates the piece table for vocab pieces (store_bytes of
 * bytes in all), the hash empty; rt_tok_index(t, id) enters piece id (a duplicate keeps the first);
 * rt_tok_lookup finds the id of n bytes, or -1. */
int rt_tok_alloc(RtTokenizer *t, int vocab, size_t store_bytes, RtError *err);
void rt_tok_index(RtTokenizer *t, int32_t id);
int32_t rt_tok_lookup(const RtTokenizer *t, const void *s, size_t n);
/* io/bpe.c: the byte-level BPE loaders and encoder. */
int rt_bpe_load_gpt2(RtTokenizer *t, const char *encoder_json, const char *vocab_bpe, RtError *err);
int rt_bpe_load_hf(RtTokenizer *t, const char *tokenizer_json, RtError *err);
int rt_bpe_encode(const RtTokenizer *t, const unsigned char *s, size_t n, int32_t *out, size_t *count, RtError *err);

#endif
