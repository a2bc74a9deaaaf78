# The golden messages in protocol/vectors: the Python suite checks the same bytes.
vectors <- jsonlite::fromJSON(vectors_path(), simplifyVector = FALSE)

test_that("there are golden vectors for every op and reply kind", {
  ops <- vapply(vectors, function(v) rserver:::mp_decode(hex_to_raw(v$hex))$op, "")
  expect_true(all(c("hello", "eval", "call", "get", "assign", "release", "ping", "pong",
                    "interrupt", "shutdown", "result", "error", "output") %in% ops))
})

for (v in vectors) {
  local({
    v <- v
    bytes <- hex_to_raw(v$hex)
    test_that(paste("golden vector decodes:", v$name), {
      expect_identical(rserver:::mp_decode(bytes), eval(parse(text = v$r)))
    })
    if (!is.null(v$r_encode)) {
      test_that(paste("golden vector encodes byte for byte:", v$name), {
        expect_identical(rserver:::mp_encode(eval(parse(text = v$r_encode))), bytes)
      })
    }
  })
}

test_that("the C code has the numbers of protocol/vectors/constants.json (the Python suite checks its own)", {
  expected <- jsonlite::fromJSON(sub("messages.json", "constants.json", vectors_path(), fixed = TRUE),
                                 simplifyVector = FALSE)
  have <- .Call(rserver:::C_constants)
  for (name in names(have)) expect_equal(have[[name]], expected[[name]], info = name)
  expect_equal(eval(formals(rserver::serve)$liveness[[3L]]), expected$liveness)   # serve()'s default
})
