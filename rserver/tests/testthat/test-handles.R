test_that("the handle table keeps objects, releases them and rejects stale ids", {
  base <- rserver:::handle_count()
  env <- new.env()
  ref <- rserver:::mp_decode(rserver:::mp_encode(env))
  expect_equal(rserver:::handle_count(), base + 1)
  client_ref <- c(as.raw(c(0xd7, 0x01)), unclass(ref))
  expect_identical(rserver:::mp_decode(client_ref, lookup = TRUE), env)
  expect_equal(rserver:::handle_count(), base + 1)
  expect_true(rserver:::handle_release(ref))
  expect_false(rserver:::handle_release(ref))                 # second release: no-op
  expect_equal(rserver:::handle_count(), base)
  # the slot is reused with a new generation: the old id stays dead
  ref2 <- rserver:::mp_decode(rserver:::mp_encode(mean))
  stale <- c(as.raw(0xd7), as.raw(0x01), unclass(ref))
  expect_error(rserver:::mp_decode(stale, lookup = TRUE), "not live")
  expect_true(rserver:::handle_release(ref2))
})

test_that("the table grows past its initial capacity and shrinks back", {
  base <- rserver:::handle_count()
  refs <- lapply(1:500, function(i) rserver:::mp_decode(rserver:::mp_encode(new.env())))
  expect_equal(rserver:::handle_count(), base + 500)
  for (r in refs) expect_true(rserver:::handle_release(r))
  expect_equal(rserver:::handle_count(), base)
})
