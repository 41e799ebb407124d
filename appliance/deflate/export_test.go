package deflate

// DistCode and DistRange expose the distance tables to the tests.
func DistCode(d int) int { return distCode(d) }

func DistRange(c int) (int, int) { return distBase[c], distBase[c] + 1<<distExtra[c] - 1 }
