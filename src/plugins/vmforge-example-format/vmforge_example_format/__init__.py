"""vmforge-example-format: a tiny sparse disk format, the template for format plugins."""

from vmforge_example_format.driver import ExampleFormat

__all__ = ["ExampleFormat"]
