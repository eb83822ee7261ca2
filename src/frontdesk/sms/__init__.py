"""SMS: the port for one-time codes and the adapter for Alibaba Cloud SMS (阿里云短信)."""
