# The Arrow IPC reader and writer (protocol/SPEC.md, "Arrow payloads").
arrow_dir <- file.path("..", "..", "..", "protocol", "vectors", "arrow")
manifest <- jsonlite::fromJSON(file.path(dirname(arrow_dir), "arrow.json"), simplifyVector = FALSE)
read_payload <- function(file) readBin(file.path(arrow_dir, file), "raw", file.size(file.path(arrow_dir, file)))
enc <- rserver:::arrow_encode
dec <- rserver:::arrow_decode

for (v in manifest$pyarrow) {
  test_that(paste("pyarrow's golden payload", v$name, "decodes to the R object"), {
    expect_identical(dec(read_payload(v$file)), eval(parse(text = v$r)))
  })
}

for (v in manifest$rserver) {
  test_that(paste("the writer still produces the golden payload", v$name), {
    x <- eval(parse(text = v$r))
    expect_identical(enc(x), read_payload(v$file))
    expect_identical(dec(enc(x)), x)
  })
}

test_that("R objects survive a round trip through Arrow unchanged", {
  objects <- list(
    c(1.5, NA, NaN, Inf, -Inf), c(1L, NA), c(TRUE, NA, FALSE), c("a", NA, "\u00e9\u4e2d"), character(0),
    factor(c("b", "a", NA)), factor(character(0)), as.Date(c("2024-01-01", NA)),
    as.POSIXct("2024-05-06 07:08:09", tz = "UTC"), as.POSIXct(c(0, NA), origin = "1970-01-01"),
    structure(c(0, 1.25), class = c("POSIXct", "POSIXt"), tzone = ""),
    as.difftime(c(1, NA), units = "weeks"), array(1:24, c(2, 3, 4)), matrix(c("a", NA), 1),
    c(x = "a", y = NA), data.frame(), data.frame(a = 1)[0, , drop = FALSE],
    data.frame(x = 1:5)[c(4, 2), , drop = FALSE],
    structure(list(1:2, c("a", "b")), names = c("dup", "dup"), class = "data.frame", row.names = c(NA, -2L)),
    data.frame(`a b` = 1, check.names = FALSE), runif(1e5), sample(c(letters, NA), 1e4, TRUE))
  for (x in objects) expect_identical(dec(enc(x)), x)
})

test_that("compact sequences are written without being expanded, with the same bytes", {
  expanded <- function(x) { y <- x; y[1] <- y[1]; y }   # the same values, in memory
  for (x in list(seq_len(3e5), 3e5:1, as.numeric(seq_len(3e5)), seq(0.5, by = 2, length.out = 3e5),
                 data.frame(i = seq_len(10), d = as.numeric(1:10)))) {
    expect_identical(enc(x), enc(if (is.data.frame(x)) lapply(x, expanded) |> as.data.frame() else expanded(x)))
  }
  x <- as.numeric(seq_len(1e6))
  expect_identical(dec(enc(x)), as.numeric(1:1e6))
  expect_true(any(grepl("(compact)", capture.output(.Internal(inspect(x))), fixed = TRUE)))   # still not in memory
})

test_that("objects without an Arrow form are refused by the writer", {
  expect_error(enc(list(1, 2)), "no Arrow representation")
  expect_error(enc(array(1:8, c(2, 2, 2), dimnames = list(c("a", "b")))), "no Arrow representation")
  expect_error(enc(data.frame(x = I(list(1, 2)))), "no Arrow representation")
  expect_error(enc(structure(1, label = "x")), "no Arrow representation")
  expect_error(enc(as.Date(Inf)), "out of Arrow's date32 range")
})

test_that("a truncated payload is an error at every length, never a crash", {
  full <- enc(data.frame(x = c(1.5, NA), s = c("a", NA), f = factor(c("u", "v"))))
  for (n in seq_len(length(full) - 9L)) {
    res <- tryCatch(dec(full[seq_len(n)]), error = function(e) e)
    if (!inherits(res, "error")) expect_s3_class(res, "data.frame") else expect_match(conditionMessage(res), "Arrow")
  }
})

test_that("random corruption of payloads gives errors or values, never crashes", {
  set.seed(42)
  seeds <- lapply(manifest$pyarrow, function(v) read_payload(v$file))
  for (i in 1:3000) {
    p <- seeds[[(i %% length(seeds)) + 1L]]
    at <- sample(length(p), sample(1:4, 1))
    p[at] <- as.raw(sample(0:255, length(at), TRUE))
    res <- tryCatch(dec(p), error = function(e) e)
    expect_true(inherits(res, "error") || is.list(res) || is.atomic(res))
  }
})

test_that("hostile headers are refused with a reason", {
  good <- enc(c(1, 2, 3))
  expect_error(dec(raw(0)), "no schema")
  expect_error(dec(as.raw(c(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f))), "outside the stream")
  expect_error(dec(as.raw(c(1, 2, 3, 4, 5, 6, 7, 8))), "continuation")
  bad <- good
  bad[5:8] <- as.raw(c(4, 0, 0, 0))   # metadata too short to hold a table
  expect_error(dec(bad), "Arrow")
  big <- enc(data.frame(x = 1:3))
  schema <- big[seq_len(8L + readBin(big[5:8], "integer", size = 4L, endian = "little"))]
  expect_error(dec(c(big[1:(length(big) - 8)], schema)), "second schema")
})

test_that("a timestamp without a time zone is read as UTC wall-clock time", {
  withr_tz <- Sys.getenv("TZ")
  on.exit(Sys.setenv(TZ = withr_tz))
  Sys.setenv(TZ = "America/New_York")
  x <- dec(enc(structure(c(0, 3600.5), class = c("POSIXct", "POSIXt"))))   # no tzone: wall clock
  expect_identical(attr(x, "tzone"), "UTC")
  expect_identical(format(x[2]), "1970-01-01 01:00:00")
})

test_that("matrices with dimnames and tables travel as frames of their columns", {
  m <- matrix(c(1.5, NA, 3, 4), 2, dimnames = list(c("a", "b"), c("u", "v")))
  expect_identical(dec(enc(m)), m)
  rows_only <- matrix(1:4, 2, dimnames = list(c("a", "b"), NULL))
  expect_identical(dec(enc(rows_only)), rows_only)
  cols_only <- matrix(c("x", "y"), 1, dimnames = list(NULL, c("p", "q")))
  expect_identical(dec(enc(cols_only)), cols_only)
  t2 <- table(c(1, 1, 2), c("x", "y", "y"))
  expect_identical(dec(enc(t2)), unclass(structure(as.vector(t2), dim = dim(t2),
                                                   dimnames = unname(dimnames(t2)))))
  t1 <- table(c("b", "a", "b"))
  expect_identical(dec(enc(t1)), c(a = 1L, b = 2L))
})

test_that("time series keep their time base", {
  for (x in list(AirPassengers, ts(c(1.5, NA, 3), start = c(2001, 2), frequency = 4),
                 ts(1:10, start = 3, frequency = 7), ts(matrix(c(1, 2, 3, 4, 5, 6), 3), start = 2000,
                                                          names = c("a", "b")))) {
    back <- dec(enc(x))
    expect_equal(back, x)
    # exact, except under valgrind, whose long doubles (R's strtod) are only 64-bit
    if (grepl("vgpreload", Sys.getenv("LD_PRELOAD"))) expect_equal(tsp(back), tsp(x), tolerance = 1e-15)
    else expect_identical(tsp(back), tsp(x))
  }
  expect_error(rserver:::as_ts(1:3, "1,2"), "malformed rbridge.tsp")
  expect_error(rserver:::as_ts(1:3, "1,2,-4"), "malformed rbridge.tsp")
})

test_that("zoo and xts series keep their index, values and class", {
  skip_if_not_installed("xts")
  for (x in list(xts::xts(cbind(a = c(1.5, NA, 3), b = 4:6 + 0),
                          as.POSIXct("2024-03-10", tz = "America/New_York") + 3600 * 0:2),
                 xts::xts(c("a", NA), as.Date("2024-01-01") + 0:1), xts::xts(1:2, as.POSIXct(0:1, origin = "1970-01-01", tz = "")),
                 zoo::zoo(c(TRUE, NA, FALSE), as.Date("1960-01-01") + 0:2), zoo::zoo(matrix(1:6, 3)),
                 zoo::zoo(c(2.5, 3), c(0.5, 1)), xts::xts(matrix(numeric(0), 0, 1), as.Date(character(0)))))
    expect_identical(dec(enc(x)), x)
  form <- rserver:::arrow_form(xts::xts(1:2, as.Date("2024-01-01") + 0:1))
  expect_identical(names(form[[1L]]), c("", "index"))
  expect_identical(attributes(form[[1L]]$index), list(class = "Date"))   # no tclass, no tzone
  expect_identical(form[[2L]][["rbridge.index"]], "matrix")
  # months and quarters travel as their numbers, with the index class
  for (x in list(zoo::zoo(1:3, zoo::as.yearmon(2024 + 0:2 / 12)), zoo::as.zoo(AirPassengers),
                 xts::xts(cbind(q = c(1.5, NA)), zoo::as.yearqtr(c(1999.75, 2000)))))
    expect_identical(dec(enc(x)), x)
  expect_identical(rserver:::arrow_form(zoo::as.zoo(AirPassengers))[[2L]][["rbridge.index_class"]], "yearmon")
  # an index or values with no Arrow form: the series stays a handle
  expect_null(rserver:::arrow_form(zoo::zoo(1:2, factor(c("a", "b")))))
  expect_null(rserver:::arrow_form(zoo::zoo(c(1i, 2i), 1:2)))
  # what clients send is checked before it becomes a series
  df <- data.frame(v = c(1.5, 2), index = as.Date("2024-01-01") + 0:1)
  meta <- function(index, colnames = NA, r_class = NA, index_class = NA)
    c(index = index, colnames = colnames, r_class = r_class, index_class = index_class)
  expect_identical(rserver:::as_zoo(df, meta("vector")), zoo::zoo(c(1.5, 2), as.Date("2024-01-01") + 0:1))
  expect_s3_class(rserver:::as_zoo(df, meta("vector", r_class = '["xts","zoo"]')), "xts")
  expect_error(rserver:::as_zoo(df, meta("cube")), "malformed rbridge.index")
  expect_error(rserver:::as_zoo(df["v"], meta("vector")), "a column of values and one for the index")
  expect_error(rserver:::as_zoo(cbind(df, w = 1), meta("vector")), "must have 2 columns")
  expect_error(rserver:::as_zoo(data.frame(v = 1:2, index = c("a", "b")), meta("vector")), "dates, times or numbers")
  expect_error(rserver:::as_zoo(data.frame(v = 1:2, w = c("a", "b"), index = 1:2), meta("matrix")), "one type")
  expect_error(rserver:::as_zoo(1:3, meta("vector")), "a column of values and one for the index")
  months <- data.frame(v = 1:2, index = c(2024, 2024 + 1 / 12))
  expect_identical(rserver:::as_zoo(months, meta("vector", index_class = "yearmon")),
                   zoo::zoo(1:2, zoo::as.yearmon(c(2024, 2024 + 1 / 12))))
  expect_error(rserver:::as_zoo(months, meta("vector", index_class = "yearweek")), "index_class 'yearweek'")
  expect_error(rserver:::as_zoo(df, meta("vector", index_class = "yearmon")), "needs an index of numbers")
  expect_identical(rserver:::as_zoo(df, meta("vector", r_class = "{not json")),
                   zoo::zoo(c(1.5, 2), as.Date("2024-01-01") + 0:1))
})

test_that("data.frame subclasses and their attributes become plain frames with metadata", {
  df <- data.frame(x = I(1:2), y = c(1.5, 2))
  attr(df$y, "label") <- "Why \"this\"\n"
  form <- rserver:::arrow_form(structure(df, class = c("tbl_df", "tbl", "data.frame"), note = "kept"))
  expect_identical(class(form[[1L]]), "data.frame")
  expect_identical(attributes(form[[1L]]$x), NULL)
  expect_identical(jsonlite::fromJSON(form[[2L]][["rbridge.r_class"]]), c("tbl_df", "tbl", "data.frame"))
  expect_identical(jsonlite::fromJSON(form[[2L]][["rbridge.r_attributes"]]), list(note = "kept"))
  cols <- jsonlite::fromJSON(form[[2L]][["rbridge.r_column_attributes"]])
  expect_identical(cols, list(x = list(class = "AsIs"), y = list(label = "Why \"this\"\n")))
  bits <- structure(list(x = structure(1, class = "integer64")), class = "data.frame", row.names = 1L)
  expect_null(rserver:::arrow_form(bits))   # an integer64 column holds bits, not a double
  expect_identical(rserver:::to_json(list(a = c(u = 1.5, v = NaN), b = c("x", NA), c = "\001")),
                   '{"a":{"u":1.5,"v":null},"b":["x",null],"c":"\\u0001"}')
})

test_that("a frame that says it was a tibble, grouped tibble or data.table becomes one again", {
  df <- data.frame(g = c("a", "b", "a"), x = 1:3)
  meta <- function(cls, groups = NULL) c(r_class = rserver:::to_json(as.list(cls)),
    r_attributes = if (is.null(groups)) NA_character_ else rserver:::to_json(list(groups = as.list(groups))))
  expect_identical(class(rserver:::restore_form(df, meta(c("tbl_df", "tbl", "data.frame")))),
                   c("tbl_df", "tbl", "data.frame"))
  grouped <- rserver:::restore_form(df, meta(c("grouped_df", "tbl_df", "tbl", "data.frame"), "g"))
  expect_identical(dplyr::group_vars(grouped), "g")
  expect_identical(dplyr::summarise(grouped, s = sum(x))$s, c(4L, 2L))
  expect_warning(plain <- rserver:::restore_form(df, meta(c("grouped_df", "tbl_df", "tbl", "data.frame"), "h")),
                 "grouping columns h are gone")
  expect_identical(class(plain), c("tbl_df", "tbl", "data.frame"))
  expect_true(data.table::is.data.table(rserver:::restore_form(df, meta(c("data.table", "data.frame")))))
  expect_identical(rserver:::restore_form(df, meta(c("anova", "data.frame"))), df)   # informative only
  expect_identical(rserver:::restore_form(df, c(r_class = "not json", r_attributes = NA)), df)
})
