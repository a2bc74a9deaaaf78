enc <- rserver:::mp_encode
client_ref <- function(ref) c(as.raw(c(0xd7, 0x01)), unclass(ref))   # ext 1, 8 bytes
dec <- function(x, lookup = FALSE) rserver:::mp_decode(x, lookup)
rt <- function(x) dec(enc(x))

test_that("values round-trip through the codec", {
  for (x in list(NULL, TRUE, FALSE, 0L, -1L, 2147483647L, 1.5, -0, Inf, -Inf, NaN, "a", "",
                 "h\u00e9llo \u4e16\u754c", as.raw(c(0, 255)), raw(0), list(), list(1L, "a"),
                 list(a = 1, b = list(c = "d")), c(1.5, NA, NaN), c(1L, NA), c(TRUE, NA, FALSE),
                 c("x", NA, "\u00fc"), character(0), integer(0), double(0), logical(0))) {
    expect_identical(rt(x), x)
  }
})

test_that("NA scalars encode as nil, and NA and NaN stay distinct in vectors", {
  for (na in list(NA, NA_integer_, NA_real_, NA_character_)) expect_null(rt(na))
  v <- rt(c(NA, NaN, 1))
  expect_true(is.na(v[1]) && !is.nan(v[1]))
  expect_true(is.nan(v[2]))
})

test_that("integers outside int32 become doubles up to 2^53 and are refused beyond", {
  expect_identical(dec(as.raw(c(0xce, 0x80, 0, 0, 0))), 2147483648)           # uint32 2^31
  expect_identical(dec(as.raw(c(0xd2, 0x80, 0, 0, 0))), -2147483648)          # int32 min is NA in R
  expect_identical(dec(as.raw(c(0xcf, 0, 0x20, 0, 0, 0, 0, 0, 0))), 2^53)
  expect_error(dec(as.raw(c(0xcf, 0, 0x20, 0, 0, 0, 0, 0, 1))), "2\\^53")
  expect_identical(dec(as.raw(c(0xd3, 0xff, 0xe0, 0, 0, 0, 0, 0, 0))), -2^53)
  expect_error(dec(as.raw(c(0xd3, 0xff, 0xdf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))), "2\\^53")
  expect_error(dec(as.raw(c(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))), "2\\^53")
})

test_that("data with an Arrow form becomes a payload reference (frame 1, 2, ...)", {
  for (x in list(factor("a"), c(a = 1), matrix(1:4, 2), Sys.Date(), data.frame(x = 1), runif(5000))) {
    ref <- dec(enc(x))
    expect_s3_class(ref, "rbridge_payload_ref")
    expect_identical(unclass(ref), as.raw(c(0x66, 1, 0, 0, 0)))
  }
  two <- dec(enc(list(data.frame(x = 1), factor("b"))))
  expect_identical(unclass(two[[2]]), as.raw(c(0x66, 2, 0, 0, 0)))
})

test_that("objects with other attributes, functions and environments become handles", {
  for (x in list(structure(1:2, label = "x"), array(1:8, c(2, 2, 2), dimnames = list(c("a", "b"))), mean,
                 globalenv(), list(1, b = 2), list(a = 1, a = 2), 1i)) {
    bytes <- enc(x)
    ref <- dec(bytes)
    expect_s3_class(ref, "rbridge_handle_ref")
    expect_error(dec(bytes, lookup = TRUE), "exactly 8 bytes")   # clients send the id only
    expect_identical(dec(client_ref(ref), lookup = TRUE), x)      # the same object comes back
    expect_true(rserver:::handle_release(ref))
  }
})

test_that("hostile input is refused with an error, never a crash", {
  bad <- list(
    as.raw(0xc1),                                   # never-used type byte
    as.raw(c(0xdd, 0xff, 0xff, 0xff, 0xff)),        # array32 of 4 billion items, no data
    as.raw(c(0xdf, 0x7f, 0xff, 0xff, 0xff, 0xc0)),  # map32 claiming 2 billion pairs
    as.raw(c(0xdb, 0xff, 0xff, 0xff, 0xf0, 0x61)),  # str32 longer than the data
    as.raw(c(0xc6, 0x00, 0x00, 0x01, 0x00)),        # bin32 with no body
    as.raw(c(0xa2, 0xc3, 0x28)),                    # invalid UTF-8
    as.raw(c(0xa3, 0x61, 0x00, 0x62)),              # embedded NUL
    as.raw(c(0x81, 0x01, 0x02)),                    # non-string map key
    as.raw(c(0xc0, 0xc0)),                          # trailing bytes
    as.raw(c(0xd4, 0x09, 0x00)),                    # unknown ext type
    as.raw(c(0xd7, 0x02, 0x64, 0x05, 0x00, 0x00, 0x00, 0, 0, 0)),  # vector: count beyond data
    as.raw(c(0xc7, 0x05, 0x02, 0x64, 0xff, 0xff, 0xff, 0xff)),     # vector: 4 billion doubles
    as.raw(c(0xc7, 0x06, 0x02, 0x73, 0x01, 0, 0, 0, 0x01)),         # string vector holding an int
    as.raw(c(0xd4, 0x01, 0x00)),                    # handle of 1 byte
    as.raw(c(0xd7, 0x01, 0, 0, 0, 9, 0, 0, 0, 9))   # handle that was never issued
  )
  for (b in bad) expect_error(dec(b, lookup = TRUE), "rbridge")
  deep <- c(rep(as.raw(0x91), 200), as.raw(0xc0))   # 200 nested arrays
  expect_error(dec(deep), "too deep")
})

test_that("random bytes never crash the decoder", {
  set.seed(1)
  for (i in 1:3000) {
    b <- as.raw(sample(0:255, sample(1:40, 1), replace = TRUE))
    tryCatch(dec(b), error = function(e) NULL)
  }
  succeed()
})

code_ext <- function(kind, text) {
  body <- c(charToRaw(kind), if (is.raw(text)) text else charToRaw(enc2utf8(text)))
  c(as.raw(c(0xc7, length(body), 0x05)), body)
}

test_that("R code (ext 5) decodes to the language object it spells", {
  expect_identical(dec(code_ext("e", "x > 2")), quote(x > 2))
  expect_identical(dec(code_ext("e", "1.5")), 1.5)
  expect_identical(dec(code_ext("s", "a b")), as.name("a b"))
  expect_identical(dec(code_ext("s", "caf\u00e9")), as.name("caf\u00e9"))
  expect_identical(dec(code_ext("f", "Surv(t, s) ~ age + strata(sex)")), quote(Surv(t, s) ~ age + strata(sex)))
  expect_identical(dec(code_ext("f", "~ x")), quote(~x))
})

test_that("malformed R code is refused with an error that names it", {
  expect_error(dec(code_ext("e", "")), "kind and some text")
  expect_error(dec(code_ext("q", "x")), "unknown kind of R code")
  expect_error(dec(code_ext("e", "x >")), "does not parse: x >")
  expect_error(dec(code_ext("e", "a; b")), "exactly one expression")
  expect_error(dec(code_ext("e", "  ")), "exactly one expression")
  expect_error(dec(code_ext("f", "x + y")), "not a formula")
  expect_error(dec(code_ext("e", as.raw(c(0xc3, 0x28)))), "not valid UTF-8")
  expect_error(dec(code_ext("s", as.raw(c(0x61, 0x00)))), "NUL")
})
