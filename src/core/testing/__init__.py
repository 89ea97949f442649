"""Test kits that plugin authors run from pytest (see ``pytest_plugin``)."""
