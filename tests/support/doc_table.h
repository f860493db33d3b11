/* Test support: reading the Markdown tables of docs/ (and other files of the
 * source tree), for the tests that hold the reference to the code
 * (tests/test_docs.c, tests/test_docs_relay.c). A row is found by its first
 * cell, written `key` (in backticks); its cells are read trimmed. Every
 * function fails the calling test on what it cannot read. */
#ifndef MAE_TEST_DOC_TABLE_H
#define MAE_TEST_DOC_TABLE_H

/* The file at path relative to the source tree ("docs/relay.md"), whole,
 * NUL-terminated, malloc'd; fails the test when it cannot be read. */
char *doc_read(const char *path);

/* The row "| `key` | ..." of a table of text (borrowed: a pointer into
 * text, at the start of its line), or NULL when there is none. */
const char *doc_find_row(const char *text, const char *key);

/* As doc_find_row, but fails the test, naming what (e.g. "docs/events.md"),
 * when there is no such row. */
const char *doc_row(const char *text, const char *what, const char *key);

/* The i-th cell (0 is the first) of the row at line, trimmed, malloc'd;
 * fails the test when the row (up to its end of line) has fewer cells. */
char *doc_cell(const char *line, int i);

#endif
