"""views: figures, the ipywidgets explorer, the report and teaching figures (imports every layer below;
only notebooks, cli and demo import it)."""
