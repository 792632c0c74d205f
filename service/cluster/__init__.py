"""One fleet over many processes: shards, their view, and the front that routes to them."""
