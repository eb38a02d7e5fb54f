"""Products and stock: public catalogue, admin create / update / adjust stock."""
