print("Hello from the Wolf sandbox")
