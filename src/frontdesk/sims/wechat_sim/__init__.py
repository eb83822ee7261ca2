"""A local WeChat platform and WeChat Pay: the same HTTP APIs and callbacks as the real ones."""
