from setuptools import find_packages, setup

package_name = 'gps_core'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/models', ['gps_core/models/pr2_arm.xml']),
    ],
    package_data={package_name: ['models/*.xml']},
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='gps-ros2 developers',
    maintainer_email='dev@gps-ros2.invalid',
    description='rclpy-free core: tasks, success rules, kinematics, state layout, samples, linear-Gaussian controllers.',
    license='Apache-2.0',
)
