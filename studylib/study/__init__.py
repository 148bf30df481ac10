"""study: grids (papermill, Dask), the results table, analysis and statistics (imports the layers below)."""
