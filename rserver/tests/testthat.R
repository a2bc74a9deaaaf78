library(testthat)
library(rserver)
test_check("rserver")
