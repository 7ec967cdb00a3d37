"""The query layer: one typed `Query` answered from rollups and raw rows alike."""
